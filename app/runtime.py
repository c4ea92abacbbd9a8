"""Serve: everything one Mailroom process shares, built once from its settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, migrate, session_factory, transaction
from app.metrics import Metrics
from app.models import PolicyVersion
from app.settings import Settings
from capture.people import registrable_domain
from capture.pipeline import Pipeline
from policies.engine import Engine
from policies.loader import load_policy


@dataclass
class Runtime:
    settings: Settings
    db: sa.Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    pipeline: Pipeline
    metrics: Metrics = field(default_factory=Metrics)

    def close(self) -> None:
        self.db.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """Validate the policy first (an invalid one stops the start), then the database."""
    policy = load_policy(settings.policy)
    settings.ensure_data_dir()
    url = settings.resolved_database_url
    if settings.auto_migrate:
        migrate(url)
    db = make_engine(url)
    sessions = session_factory(db)
    with transaction(sessions) as session:
        publish_policy(session, policy)
    readers = session_factory(db, writer=False)
    registrable_domain("example.com")  # loads the Public Suffix List now, not on first mail
    pipeline = Pipeline(
        sessions,
        policy,
        org_domains=frozenset(settings.org_domains),
        secret=settings.secret(),
        readers=readers,
        require_proof=settings.require_submitter_proof,
    )
    return Runtime(
        settings=settings, db=db, sessions=sessions, read_sessions=readers, pipeline=pipeline
    )


def publish_policy(session: Session, engine: Engine) -> PolicyVersion:
    """Store this policy as a version (once per digest) and mark it the one in force."""
    loaded = engine.policy
    row = session.scalar(sa.select(PolicyVersion).where(PolicyVersion.sha256 == loaded.sha256))
    if row is None:
        row = PolicyVersion(
            sha256=loaded.sha256,
            name=loaded.policy.metadata.name,
            version=loaded.policy.metadata.version,
            source=loaded.source,
        )
        session.add(row)
    row.activated_at = datetime.now(UTC)
    session.flush()
    return row
