"""Database: engines with durable settings, sessions, and Alembic migrations."""

from __future__ import annotations

import csv
import os
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from itertools import islice, product
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.settings import StartError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for SQLite's locks
SCRUB_WAIT_MS = 2_000  # how long scrub_wal waits for readers: a request is waiting on it
SCRUB_RETRY_SECONDS = 0.02  # between its tries while another connection checkpoints
UNICODE_LOWER = "unicode_lower"  # lower() for every alphabet, on SQLite connections
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE for "permission denied"


def make_engine(url: str) -> sa.Engine:
    """An engine; SQLite gets WAL, synchronous=FULL, foreign keys and a busy timeout. Its
    errors never quote a statement's values (`hide_parameters`): those may be mail, and an
    error's text travels (logs, a mailbox's last error)."""
    if url.startswith("sqlite"):
        _create_private(url)
        engine = sa.create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True
    )


def _create_private(url: str) -> None:
    """Create the database file 0600 if it is not there, before SQLite does (0644 less the
    umask): held mail waits in it with its text. Its -wal and -shm files take its mode."""
    database = sa.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with suppress(OSError):  # there already, no folder, or one we may not write: SQLite says
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


class DatabaseUnreachableError(StartError):
    """The database URL cannot be used, or the database cannot be reached, at start: which
    database (its password masked), why, and what to check. Raised only while making the
    engine and its first connection, where no mail is at hand: a later error's text may
    quote mail, and is never shown (see app.cli.fault_report)."""


def connected_engine(url: str) -> sa.Engine:
    """make_engine, once a first connection succeeded: every command that opens the database
    opens it here, so that a wrong URL or an unreachable database is said as such."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # its text quotes the URL, password and all
        raise DatabaseUnreachableError(
            "MAILROOM_DATABASE_URL is not a database URL (its value is left out: it may hold "
            "a password); write it as postgresql+psycopg://user:password@host:port/database"
        ) from None
    where = f"the database {_masked(parsed)}"
    try:
        engine = make_engine(url)
    except sa.exc.NoSuchModuleError:
        raise DatabaseUnreachableError(
            f"{where}: no database driver is called {parsed.drivername!r}; check "
            "MAILROOM_DATABASE_URL (postgresql+psycopg://… or sqlite:///…)"
        ) from None
    except ImportError as error:  # a dialect SQLAlchemy knows, whose driver is not installed
        raise DatabaseUnreachableError(
            f"{where}: its driver ({error.name}) is not installed; check MAILROOM_DATABASE_URL "
            "(postgresql+psycopg://… or sqlite:///…)"
        ) from None
    try:
        engine.connect().close()
    except sa.exc.DBAPIError as error:
        engine.dispose()
        raise DatabaseUnreachableError(f"cannot open {where}: {_why(parsed, error)}") from None
    return engine


def _masked(url: sa.URL) -> str:
    """The URL as the operator wrote it, but for its password (in either place it may be)."""
    passwords = [key for key in url.query if "password" in key.lower()]
    return url.difference_update_query(passwords).render_as_string(hide_password=True)


def _why(url: sa.URL, error: sa.exc.DBAPIError) -> str:
    """The driver's reason for a failed connection, which quotes no mail (there is none yet)
    and, with the password masked, no secret; then what to check."""
    reason = " ".join(str(error.orig).split())
    secrets = [url.password, *(v for k, v in url.query.items() if "password" in k.lower())]
    for secret in secrets:
        if secret and isinstance(secret, str):
            reason = reason.replace(secret, "***")
    if url.get_backend_name() == "sqlite":
        folder = Path(url.database or "").parent
        if not folder.is_dir():
            reason = f"its folder {folder} does not exist"
        elif not os.access(folder, os.W_OK | os.X_OK):
            reason = f"its folder {folder} is not writable by this user"
        return f"{reason}; check MAILROOM_DATABASE_URL (or MAILROOM_DATA_DIR)"
    refused = ("authentication failed", "no password", "pg_hba.conf", 'role "')
    if any(words in reason for words in refused):  # "role "x" does not exist" among them
        return f"{reason}; check the user name and password in MAILROOM_DATABASE_URL"
    if "does not exist" in reason:
        return f"{reason}; create the database, or check its name in MAILROOM_DATABASE_URL"
    place = f"{url.host or 'localhost'}:{url.port or 'the default port'}"
    return f"{reason}; is PostgreSQL running and reachable at {place}? check MAILROOM_DATABASE_URL"


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise DatabaseUnreachableError(
            f"cannot make {folder}, the SQLite database's folder: {reason}; check "
            "MAILROOM_DATABASE_URL (or MAILROOM_DATA_DIR)"
        ) from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling is switched off so that BEGIN IMMEDIATE below
    # takes the write lock up front, instead of failing later on a lock upgrade.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Deleted rows are overwritten, not left in free pages: purged and erased data must go.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
    # SQLite's lower() folds ASCII alone; searches fold with this one (app/crm.py). Not
    # named lower: the expression indexes keep the meaning they were built with.
    dbapi_connection.create_function(UNICODE_LOWER, 1, _unicode_lower, deterministic=True)


def _unicode_lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


MAX_LOWER_FORMS = 32  # in one IN list (app.prepared.PreparedIn.CHUNK): one statement
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def lower_forms(text: str) -> list[str]:
    """What lower() in SQL makes of `text` in any case it may be written in, for an indexed
    `lower(column) IN (...)`: PostgreSQL's folds every alphabet, as Python does, while
    SQLite's folds A to Z alone (`Émile@` stays `Émile@`, `émile@` stays `émile@`). So:
    Python's lower case, then SQLite's of the text as written, in capitals, with capital
    initials, and of every other casing of its letters beyond ASCII, MAX_LOWER_FORMS in all
    (a name of more than five letters in a cased alphabet has more casings than that)."""
    lowered = text.lower()
    if text.isascii():
        return [lowered]
    cases = [
        dict.fromkeys(
            case.translate(_ASCII_LOWER)
            for case in (letter, letter.upper(), letter.title())
            if len(case) == 1 and case.lower() == letter
        )
        or [letter]
        for letter in lowered
    ]
    casings = ("".join(letters) for letters in product(*cases))
    usual = (u for u in (text, text.upper(), lowered.title()) if u.lower() == lowered)
    forms = dict.fromkeys([lowered, *(u.translate(_ASCII_LOWER) for u in usual)])
    forms.update(dict.fromkeys(islice(casings, 2 * MAX_LOWER_FORMS)))
    return list(forms)[:MAX_LOWER_FORMS]


def _sqlite_begin_immediate(connection: sa.Connection) -> None:
    # Writers take the lock up front (no failed lock upgrades); readers do not block them.
    writer = connection.get_execution_options().get("writer", True)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN DEFERRED")


def session_factory(engine: sa.Engine, *, writer: bool = True) -> sessionmaker[Session]:
    """Sessions for writing (the default) or, with writer=False, for reading only."""
    return sessionmaker(engine.execution_options(writer=writer), expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any exception."""
    with sessions() as session, session.begin():
        yield session


class DanglingReferenceError(StartError):
    """A migration left rows referring to rows that are not there. Its text (tables and a
    count, never a row's values) is the operator's to read."""


def migration_engine(url: str) -> sa.Engine:
    """The engine migrations run on. On SQLite a change ALTER TABLE cannot make is made by
    building the table anew and dropping the old one (Alembic's batch mode). With foreign
    keys enforced, that drop first deletes the old table's rows, and ON DELETE CASCADE takes
    every row referring to them along (an employee's aliases, tokens, relationships,
    messages). So migrations run with enforcement off, as SQLite's own procedure for such
    changes says, and `check_references` runs before the commit."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _foreign_keys_off)
    return engine


def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    # After make_engine's own settings, outside any transaction: where SQLite honours it.
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def check_references(connection: sa.Connection) -> None:
    """Fail (so that the migration's transaction rolls back, changing nothing) if any row
    refers to a row that is not there. SQLite only: PostgreSQL enforces references itself."""
    if connection.dialect.name != "sqlite":
        return
    dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if dangling:
        tables = ", ".join(sorted({row[0] for row in dangling}))
        raise DanglingReferenceError(
            f"the migration would leave {len(dangling)} rows referring to missing rows "
            f"(in {tables}); nothing was changed. `PRAGMA foreign_key_check` in the sqlite3 "
            "shell lists them"
        )


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # a tenth of a second, paid only by what migrates

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> str | None:
    """Bring the schema to this release's newest revision (idempotent). A schema migrated for
    a later release is left as it is, as by a process that does not migrate (see
    schema_behind): Alembic cannot upgrade from a revision it does not know. Returns that
    later revision, else None."""
    from alembic import command

    if url.startswith("sqlite:///"):
        _make_folder(Path(url.removeprefix("sqlite:///")).parent)
    engine = connected_engine(url)
    try:
        current, head, ours = _revisions(engine)
    finally:
        engine.dispose()
    if current is not None and current not in ours:
        return current
    if current != head:  # at the newest already, as at most starts: nothing to run
        with _privilege_said(engine.url):
            command.upgrade(alembic_config(url), "head")
    return None


@contextmanager
def _privilege_said(url: sa.URL) -> Iterator[None]:
    """A database user refused a privilege Mailroom needs on its tables (PostgreSQL 15 on
    lets only the database's owner create tables in schema public; only a table's owner alters
    it) is told what to do: by SQLSTATE, never the error's text, which names what the
    statement touched."""
    try:
        yield
    except sa.exc.DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
            raise
        user = url.username or "(the default)"
        raise StartError(
            f"the database user {user} was refused a privilege on Mailroom's tables in "
            f"{_masked(url)} (permission denied): Mailroom's user should own the database and "
            f"its tables, e.g. ALTER DATABASE {url.database} OWNER TO {user}; or, for a user "
            "that only reads and writes them, their owner migrates (`mailroom migrate`) and "
            "this one starts with MAILROOM_AUTO_MIGRATE=false"
        ) from None


def schema_behind(engine: sa.Engine) -> tuple[str | None, str] | None:
    """The database's revision and this release's newest, if the database is older than this
    release (unmigrated, or migrated by an earlier one); None if it is at the newest, or
    newer: migrated for a later release, as a rolling upgrade does before replacing the
    processes (the release notes say when a running version cannot work with it)."""
    current, head, ours = _revisions(engine)
    if current == head or (current is not None and current not in ours):
        return None
    return current, head


def _revisions(engine: sa.Engine) -> tuple[str | None, str, frozenset[str]]:
    """The database's revision, this release's newest, and every revision this release has;
    read once the database user is found to hold what the service needs (_require_grants)."""
    from alembic.runtime.migration import MigrationContext

    head, ours = _release_revisions()
    with _privilege_said(engine.url), engine.execution_options(writer=False).connect() as conn:
        _require_grants(conn)
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head, ours


class MissingGrantsError(StartError):
    """The database user may not use Mailroom's tables as the service does: which privileges
    it lacks, on what, and the GRANT statements (README: running as a least-privilege role)."""


# What the database user lacks on Mailroom's tables, where the search path finds them (a user
# without USAGE on their schema finds none there: it would be told to migrate). Catalog reads
# alone, which need no privilege. The service reads the revision, and writes every table.
_GRANTS_MISSING = sa.text("""
    WITH home AS (
        SELECT n.oid, n.nspname
        FROM unnest(CAST(:path AS text[])) WITH ORDINALITY AS p (name, place)
        JOIN pg_namespace n ON n.nspname = p.name
        WHERE EXISTS (
            SELECT FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'alembic_version'
        )
        ORDER BY p.place LIMIT 1
    ), ours AS (
        SELECT c.oid, c.relname, home.nspname FROM home
        JOIN pg_class c ON c.relnamespace = home.oid AND c.relname = ANY(CAST(:tables AS text[]))
    )
    SELECT 0, 'schema', nspname, nspname, 'USAGE', 0 FROM home
    WHERE NOT has_schema_privilege(oid, 'USAGE')
    UNION ALL
    SELECT 1, 'table', nspname, relname, p.privilege, p.place
    FROM ours CROSS JOIN unnest(CAST(:privileges AS text[])) WITH ORDINALITY AS p (privilege, place)
    WHERE NOT has_table_privilege(ours.oid, p.privilege)
        AND (relname <> 'alembic_version' OR p.privilege = 'SELECT')
    UNION ALL
    SELECT 2, 'sequence', nspname, s.relname, 'USAGE', 0
    FROM ours JOIN pg_depend d ON d.refobjid = ours.oid AND d.deptype IN ('a', 'i')
    JOIN pg_class s ON s.oid = d.objid  -- a sequence; or a TOAST table, which has no grants
    WHERE CASE s.relkind WHEN 'S' THEN NOT has_sequence_privilege(s.oid, 'USAGE') END
    ORDER BY 1, 4, 6
""")
_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
_GRANTS = {
    "schema": "GRANT USAGE ON SCHEMA {schema} TO {user}",
    "table": "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {user}",
    "sequence": "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {user}",
}
MAX_NAMED = 4  # objects named in the error; a user granted nothing lacks some fifty


def search_path(setting: str) -> list[str]:
    """The schema names of a search_path setting, in order. PostgreSQL gives it back with
    unquoted names folded and the others in double quotes (a quote doubled inside), which
    may hold commas: `"Sales, EU", public`."""
    return next(csv.reader([setting], skipinitialspace=True), [])


def _require_grants(conn: sa.Connection) -> None:
    """On PostgreSQL, fail naming what the database user lacks on Mailroom's tables (a role
    that only reads and writes them, while another owns and migrates them): else a start
    failed on the first table it could not use, as a fault report or as a schema to migrate,
    or it started and answered mail 451 while it could not write one."""
    if conn.dialect.name != "postgresql":
        return
    from app.models import Base  # the tables: loaded by every command that gets here

    user, path = conn.execute(sa.text("SELECT current_user, current_setting('search_path')")).one()
    params = {
        "path": [user if name == "$user" else name for name in search_path(path)],
        "tables": ["alembic_version", *Base.metadata.tables],
        "privileges": list(_TABLE_PRIVILEGES),
    }
    rows = conn.execute(_GRANTS_MISSING, params).all()
    if not rows:
        return
    missing: dict[tuple[str, str], list[str]] = {}
    for _order, kind, _schema, name, privilege, _place in rows:
        missing.setdefault((kind, name), []).append(privilege)
    schema = rows[0][2]
    lacks = [f"{', '.join(p)} on {kind} {name}" for (kind, name), p in missing.items()]
    more = f" and {len(lacks) - MAX_NAMED} more" if len(lacks) > MAX_NAMED else ""
    quote = conn.dialect.identifier_preparer.quote
    words = {"schema": quote(schema), "user": quote(user)}
    grants = [_GRANTS[kind].format(**words) for kind in dict.fromkeys(k for k, _ in missing)]
    raise MissingGrantsError(
        f"the database user {user} lacks privileges Mailroom needs on its tables in "
        f"{_masked(conn.engine.url)}: {'; '.join(lacks[:MAX_NAMED])}{more}. Their owner grants "
        f"them: {'; '.join(grants)} (see Running as a least-privilege role in the README)"
    )


@cache
def _release_revisions() -> tuple[str, frozenset[str]]:
    """This release's newest revision and all its revisions: read from the migration scripts
    once a process (they are Python files Alembic loads, a twentieth of a second)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None, "the migrations have one head"
    return head, frozenset(revision.revision for revision in script.walk_revisions())


def scrub_wal(engine: sa.Engine) -> bool | None:
    """SQLite keeps old page images in its write-ahead log until a checkpoint: fold it in and
    truncate it, so that removed data leaves the disk. A connection still reading an older
    snapshot (or writing) keeps the log, and so does another connection's checkpoint in
    progress (SQLite's own after a large commit, or another scrub); after waiting
    SCRUB_WAIT_MS in all for them this gives up.
    Whether the log was truncated; None on other databases, which have no such step here."""
    if engine.dialect.name != "sqlite":
        return None
    deadline = time.monotonic() + SCRUB_WAIT_MS / 1000
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        while True:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            cursor.execute(f"PRAGMA busy_timeout={left}")
            busy, _frames, _copied = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0 or time.monotonic() >= deadline:
                break
            # Another connection's checkpoint (an erasure's scrub, the retention job's), which
            # SQLite answers with "busy" at once, not through the busy handler: try again.
            time.sleep(SCRUB_RETRY_SECONDS)
    finally:
        raw.cursor().execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        raw.close()
    return bool(busy == 0)
