"""Record: what the policy says must not be kept any longer is removed, on a schedule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app import ledger, review
from app.db import scrub_wal
from app.models import MessageOwner
from app.threads import remove_emptied
from policies.model import LoadedPolicy

PURGE_EVERY = 600.0  # seconds


def purge_expired_holds(session: Session, now: datetime) -> int:
    """Remove each employee's held copy whose review period has passed; then the held
    messages no one keeps or waits for any longer (a colleague's capture of the same mail
    stays), and the threads they leave without messages. Their decisions stay. Returns the
    number of copies removed."""
    copies, threads = review.remove_held_copies(
        session,
        sa.and_(MessageOwner.held_until.is_not(None), MessageOwner.held_until < now),
        sa.true(),
    )
    remove_emptied(session, threads)
    return copies


def purge_once(
    db: sa.Engine,
    sessions: sessionmaker[Session],
    policy: Callable[[], LoadedPolicy],
    *,
    chunk: int = ledger.PURGE_CHUNK,
) -> int:
    """One scheduled run (see app/jobs.py): held messages past their review period, then
    decision records older than the policy in force keeps them (app/ledger.py), `chunk` to a
    transaction, so that capture waits for none long; then what they left in SQLite's
    write-ahead log goes too, and so does what an earlier removal left there while another
    connection kept the log (app/db.py scrub_wal)."""
    now = datetime.now(UTC)
    loaded = policy()
    with sessions() as session, session.begin():
        done = purge_expired_holds(session, now)
    cutoff = now - timedelta(days=loaded.policy.retention.decision_days)
    removed = chunk
    while removed == chunk:
        with sessions() as session, session.begin():
            removed = ledger.purge_before(
                session, cutoff, policy_sha256=loaded.sha256, now=now, at_most=chunk
            )
        done += removed
    scrub_wal(db)
    return done
