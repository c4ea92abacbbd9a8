"""Serve on PostgreSQL as a role that may only read and write the tables another role owns."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from app import ledger
from app.db import MissingGrantsError, alembic_config, migrate, transaction
from app.models import Message
from app.retention import purge_once
from app.runtime import build_runtime
from app.settings import Settings, StartError
from tests.conftest import ROOT, add_employee, own_cluster, run_service
from tests.dovecot import Dovecot
from tests.mail import compose, send
from tests.test_cli import mailroom_with
from tests.test_imap import ALICE, business, new_mailbox, sync

OWNER, SERVICE = "mailroom_owner", "mailroom_service"


def _readme_grants() -> list[str]:
    """The statements README.md tells the owner to run, as it writes them."""
    readme = (ROOT / "README.md").read_text()
    part = readme[readme.index("**Running as a least-privilege role on PostgreSQL.**") :]
    block = re.search(r"```sql\n(.*?)```", part, re.DOTALL)
    assert block is not None, "the README's part gives its statements in an sql block"
    return [s.strip() for s in block.group(1).split(";") if s.strip()]


@pytest.fixture(scope="module")
def cluster() -> Iterator[sa.URL]:
    """A throwaway PostgreSQL cluster with the roles `mailroom_owner` and `mailroom_service`
    (its superuser's URL)."""
    with own_cluster() as superuser:
        admin = sa.create_engine(superuser, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE ROLE {OWNER} LOGIN"))
            conn.execute(sa.text(f"CREATE ROLE {SERVICE} LOGIN"))
        admin.dispose()
        yield superuser


@pytest.fixture
def granted(cluster: sa.URL, settings: Settings) -> Iterator[Settings]:
    """A database the owner migrated and granted the service what the README says, and the
    settings of a service process that runs as the service role and does not migrate."""
    database = f"grants_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(cluster, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database} OWNER {OWNER}"))
    public = sa.create_engine(cluster.set(database=database), isolation_level="AUTOCOMMIT")
    with public.connect() as conn:  # its owner alone creates in it, as from PostgreSQL 15 on
        conn.execute(sa.text(f"ALTER SCHEMA public OWNER TO {OWNER}"))
        conn.execute(sa.text("REVOKE ALL ON SCHEMA public FROM PUBLIC"))  # only as granted
    public.dispose()
    owner = cluster.set(username=OWNER, database=database)
    migrate(owner.render_as_string())  # `mailroom migrate` as the owner
    _as_owner(owner, *_readme_grants())
    service = owner.set(username=SERVICE).render_as_string()
    try:
        yield settings.model_copy(update={"database_url": service, "auto_migrate": False})
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {database} WITH (FORCE)"))
        admin.dispose()


def _as_owner(granted: Settings | sa.URL, *statements: str) -> None:
    url = granted if isinstance(granted, sa.URL) else sa.make_url(granted.database_url)
    engine = sa.create_engine(url.set(username=OWNER), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def test_a_service_role_with_the_readmes_grants_files_mail_and_runs_its_jobs(
    granted: Settings,
) -> None:
    with run_service(granted) as running:
        sessions = running.runtime.sessions
        add_employee(sessions, "alice@example.com")
        assert send(running.smtp_port, compose())[0] == 250
        internal = compose(to="Carol <carol@example.com>", message_id="<internal@example.com>")
        assert send(running.smtp_port, internal)[0] == 250  # dropped: a record alone
        policy = running.runtime.pipeline.engine.policy

        purge_once(running.runtime.db, sessions, lambda: policy)
        later = datetime.now(UTC) + timedelta(days=1)
        with transaction(sessions) as session:  # as the purge runs once the records expired
            purged = ledger.purge_before(session, later, policy_sha256=policy.sha256, now=later)
        assert running.service.deliverer is not None
        running.service.deliverer.run()
        with sessions() as session:
            filed = session.scalar(sa.select(sa.func.count()).select_from(Message))
            verified = ledger.verify(session)

    assert filed == 1
    assert purged == 1, "the dropped message's record; the filed one's explains it"
    assert verified.ok, verified.problem
    # A later release's migration, run by the owner, adds a table the service may use at once.
    _as_owner(granted, "CREATE TABLE later_feature (id serial PRIMARY KEY, note text)")
    engine = sa.create_engine(granted.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO later_feature (note) VALUES ('written')"))
    engine.dispose()


def test_a_service_role_with_the_readmes_grants_syncs_a_mailbox(
    granted: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    runtime = build_runtime(granted)
    try:
        add_employee(runtime.sessions, ALICE)
        dovecot.append(imap_user, "INBOX", [business(1)])
        done = sync(runtime, new_mailbox(runtime, dovecot, imap_user, ["INBOX"]))
    finally:
        runtime.close()
    assert done.stats.outcomes == {"capture": 1}


@pytest.mark.parametrize(
    ("revoked", "lacks", "grant"),
    [
        (
            f"REVOKE USAGE ON SCHEMA public FROM {SERVICE}",
            "USAGE on schema public",
            f"GRANT USAGE ON SCHEMA public TO {SERVICE}",
        ),
        (
            f"REVOKE SELECT ON alembic_version FROM {SERVICE}",
            "SELECT on table alembic_version",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {SERVICE}",
        ),
        (  # a table a later migration added, with no default privileges
            f"REVOKE ALL ON webhook_attempts FROM {SERVICE}",
            "SELECT, INSERT, UPDATE, DELETE on table webhook_attempts",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {SERVICE}",
        ),
        (
            f"REVOKE USAGE ON ALL SEQUENCES IN SCHEMA public FROM {SERVICE}",
            "USAGE on sequence api_tokens_id_seq; USAGE on sequence app_passwords_id_seq; "
            "USAGE on sequence attachments_id_seq; USAGE on sequence companies_id_seq "
            "and 19 more",
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {SERVICE}",
        ),
    ],
)
def test_a_service_role_missing_a_grant_is_told_which_and_how_to_grant_it(
    granted: Settings, revoked: str, lacks: str, grant: str
) -> None:
    """Without schema USAGE the start said the schema was at revision none (run `mailroom
    migrate`, which the service may not); without SELECT on the revision's table, that the
    user should own the database; without a sequence, a fault report; without a table, it
    started, and failed on it later (every message 451, had it been a table mail goes to)."""
    _as_owner(granted, revoked)
    url = sa.make_url(granted.database_url)
    for auto_migrate in (False, True):
        with pytest.raises(MissingGrantsError) as refused:
            build_runtime(granted.model_copy(update={"auto_migrate": auto_migrate}))

        assert str(refused.value) == (
            f"the database user {SERVICE} lacks privileges Mailroom needs on its tables in "
            f"{url}: {lacks}. Their owner grants them: {grant} (see Running as a "
            "least-privilege role in the README)"
        )


def test_a_service_role_migrating_at_start_is_told_to_let_the_owner_migrate(
    granted: Settings,
) -> None:
    """MAILROOM_AUTO_MIGRATE left on (the default) for a role that only reads and writes: at
    the next upgrade the start was told to make that role the database's owner, undoing the
    least privilege its operator chose, and not the other way out."""
    owner = sa.make_url(granted.database_url).set(username=OWNER)
    command.downgrade(alembic_config(owner.render_as_string()), "-1")  # a release behind

    done = mailroom_with(granted, {"MAILROOM_AUTO_MIGRATE": "true"}, "serve")

    assert done.returncode == 1
    assert done.stderr.endswith(
        f"e.g. ALTER DATABASE {owner.database} OWNER TO {SERVICE}; or, for a user that only "
        "reads and writes them, their owner migrates (`mailroom migrate`) and this one starts "
        "with MAILROOM_AUTO_MIGRATE=false\n"
    ), done.stderr


def test_a_migration_refused_in_process_leaves_no_connection_open(
    granted: Settings, cluster: sa.URL
) -> None:
    """The migration environment closed its engine only after a migration that succeeded: a
    caller that goes on after a refused one (a test, an embedding process) kept a connection
    to the database, and a ResourceWarning for it, until its garbage was collected."""
    owner = sa.make_url(granted.database_url).set(username=OWNER)
    command.downgrade(alembic_config(owner.render_as_string()), "-1")  # a release behind

    with pytest.raises(StartError):
        migrate(granted.database_url)  # as the service role, which may not alter the tables

    admin = sa.create_engine(cluster)
    with admin.connect() as conn:
        left = conn.scalar(
            sa.text("SELECT count(*) FROM pg_stat_activity WHERE usename = :user"),
            {"user": SERVICE},
        )
    admin.dispose()
    assert left == 0


def test_tables_in_a_schema_whose_name_holds_a_comma_are_checked_there(
    cluster: sa.URL, settings: Settings
) -> None:
    """The search path was read as names between commas: a quoted schema name holding one
    was looked for in pieces, the tables not found, and the service told to migrate them."""
    database = f"grants_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(cluster, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database} OWNER {OWNER}"))
        conn.execute(sa.text(f'ALTER DATABASE {database} SET search_path TO "Sales, EU"'))
    owner = cluster.set(username=OWNER, database=database)
    try:
        _as_owner(owner, 'CREATE SCHEMA "Sales, EU"')
        migrate(owner.render_as_string())  # its tables go to the first schema of the path
        service = owner.set(username=SERVICE).render_as_string()
        with pytest.raises(MissingGrantsError) as refused:
            build_runtime(settings.model_copy(update={"database_url": service}))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {database} WITH (FORCE)"))
        admin.dispose()

    assert str(refused.value).startswith(
        f"the database user {SERVICE} lacks privileges Mailroom needs on its tables in "
        f"{owner.set(username=SERVICE)}: USAGE on schema Sales, EU;"
    ), str(refused.value)
    assert f'GRANT USAGE ON SCHEMA "Sales, EU" TO {SERVICE};' in str(refused.value)
