"""Upgrading keeps every row: a migration that rebuilds a table (SQLite's batch mode) must
not let the old table's removal delete the rows that refer to it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from app import ledger
from app.db import (
    DanglingReferenceError,
    alembic_config,
    make_engine,
    session_factory,
    transaction,
)
from app.models import MessageOwner
from app.runtime import build_runtime
from app.settings import Settings, StartError
from tests.conftest import TEST_SECRET, scratch_database, server_url
from tests.test_schema_and_ledger import _entry


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database with no schema yet: a new SQLite file, or a new PostgreSQL database."""
    server = server_url()
    if server is None:
        yield f"sqlite:///{tmp_path / 'mailroom.db'}"
        return
    with scratch_database(server) as url:
        yield url


def _revisions(url: str) -> list[str]:
    """Every revision, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config(url))
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def _value(column: sa.Column[Any]) -> Any:
    """A plain value of the column's type; every foreign key points at row 1."""
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return datetime(2026, 1, 1, tzinfo=UTC)
    if isinstance(kind, sa.Date):
        return date(2026, 1, 1)
    if isinstance(kind, sa.Boolean):
        return False
    if isinstance(kind, sa.JSON):
        return []
    if isinstance(kind, sa.Integer | sa.Numeric):
        return 1
    if isinstance(kind, sa.LargeBinary):
        return b"x"
    return "x"


def _row(table: sa.Table, n: int = 1) -> dict[str, Any]:
    """Row n of a table, its id given by the database (n in an empty table, on PostgreSQL
    too, whose sequences a given id would not move), its text unique to it."""
    values = {c.name: _value(c) for c in table.columns if not (c.primary_key and c.name == "id")}
    return {k: f"{v}{n}" if isinstance(v, str) and n > 1 else v for k, v in values.items()}


def _fill_empty_tables(engine: sa.Engine) -> dict[str, int]:
    """One row in each table that has none (row 1, pointing at row 1 of every table it
    refers to); returns every table's row count."""
    tables = sa.MetaData()
    tables.reflect(engine)
    with engine.begin() as conn:
        for table in tables.sorted_tables:
            if table.name != "alembic_version" and _count(conn, table.name) == 0:
                conn.execute(table.insert().values(_row(table)))
    names = [table.name for table in tables.sorted_tables if table.name != "alembic_version"]
    return _counts(engine, names)


def _count(conn: sa.Connection, name: str) -> int:
    return int(conn.scalar(sa.select(sa.func.count()).select_from(sa.table(name))) or 0)


def _counts(engine: sa.Engine, names: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: _count(conn, name) for name in names}


# Reflected to fill the tables: SQLite's reflection skips expression indexes, with a warning.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_each_upgrade_and_downgrade_keeps_the_rows_already_there_and_can_run_again(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    config = alembic_config(url)
    engine = make_engine(url)
    try:
        kept: dict[str, int] = {}
        history = []
        for revision in _revisions(url):
            command.upgrade(config, revision)
            assert _counts(engine, list(kept)) == kept, f"upgrading to {revision} lost rows"
            engine.dispose()
            kept = _fill_empty_tables(engine)
            history.append((revision, dict(kept)))
        for (revision, before), (_, after) in zip(history[-2::-1], history[::-1], strict=False):
            command.downgrade(config, revision)
            engine.dispose()
            expected = {name: count for name, count in after.items() if name in before}
            assert _counts(engine, list(expected)) == expected, f"down to {revision} lost rows"
        # And up again: each upgrade also runs on what its own downgrade left.
        first = dict(history[0][1])
        command.upgrade(config, "head")
        engine.dispose()
        assert _counts(engine, list(first)) == first, "upgrading again lost rows"
    finally:
        engine.dispose()


def test_a_migration_that_would_leave_a_dangling_reference_changes_nothing(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    if not url.startswith("sqlite"):
        pytest.skip("PostgreSQL enforces references during migrations itself")
    config = alembic_config(url)
    previous = _revisions(url)[-2]
    command.upgrade(config, previous)
    engine = sa.create_engine(url)  # no enforcement: the reference is made to dangle
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO employee_aliases (id, employee_id, address) VALUES (1, 99, 'x@y.z')"
            )
        )
    with pytest.raises(DanglingReferenceError, match="employee_aliases"):
        command.upgrade(config, "head")
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == previous
    engine.dispose()


def test_mailroom_migrate_says_which_rows_would_dangle_and_how_to_find_them(
    empty_database_url: str, tmp_path: Path
) -> None:
    """The refusal names tables and a count, never a row's values, and says how to list the
    rows: the command line printed a fault report that left all of that out."""
    url = empty_database_url
    if not url.startswith("sqlite"):
        pytest.skip("PostgreSQL enforces references during migrations itself")
    command.upgrade(alembic_config(url), _revisions(url)[-2])
    engine = sa.create_engine(url)  # no enforcement: the reference is made to dangle
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO employee_aliases (id, employee_id, address) VALUES (1, 99, 'x@y.z')"
            )
        )
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")} | {
        "MAILROOM_DATA_DIR": str(tmp_path / "var"),
        "MAILROOM_DATABASE_URL": url,
        "MAILROOM_SECRET_KEY": TEST_SECRET,
    }

    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1
    assert done.stderr == (
        "error: the migration would leave 1 rows referring to missing rows (in "
        "employee_aliases); nothing was changed. `PRAGMA foreign_key_check` in the sqlite3 "
        "shell lists them\n"
    )


def test_the_decision_log_still_verifies_after_its_table_is_rebuilt(
    empty_database_url: str,
) -> None:
    """Migration 0011 rebuilds the decisions table on SQLite: every record, hash and link
    comes through, and an anchor noted before still matches after."""
    url = empty_database_url
    config = alembic_config(url)
    command.upgrade(config, "head")
    engine = make_engine(url)
    sessions = session_factory(engine)
    for n in range(5):
        with transaction(sessions) as session:
            ledger.append(session.connection(), _entry(n))
    with sessions() as session:
        before = ledger.verify(session)
    engine.dispose()

    command.downgrade(config, "0010")
    command.upgrade(config, "head")

    with sessions() as session:
        assert before.head_id is not None and before.head_hash is not None
        after = ledger.verify(session, anchor=ledger.Anchor(before.head_id, before.head_hash))
    engine.dispose()
    assert (after.ok, after.checked, after.head_hash) == (True, 5, before.head_hash)


# The tables 0013 rebuilds (test_schema_and_ledger checks that the code declares the same).
REBUILT: tuple[str, ...] = import_module("migrations.versions.0013_ids_never_reused").TABLES


def _structure(engine: sa.Engine) -> dict[str, Any]:
    """Every table's columns, references (with their ON DELETE), unique constraints and
    indexes; the indexes as the database holds them, expression indexes too."""
    inspector = sa.inspect(engine)
    found: dict[str, Any] = {}
    for name in inspector.get_table_names():
        columns = [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)]
        references = inspector.get_foreign_keys(name)
        uniques = sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name))
        found[name] = (columns, references, uniques)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
        else:
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        found["indexes"] = sorted(map(tuple, conn.execute(sa.text(query))))
    return found


def _rows(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    tables = sa.MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        return {
            t.name: sorted(map(tuple, conn.execute(sa.select(t))))
            for t in tables.sorted_tables
            if t.name != "alembic_version"
        }


# Reflected to fill and compare the tables: SQLite's reflection skips expression indexes
# (they are compared as sqlite_master holds them).
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_upgrading_to_0013_keeps_rows_indexes_and_references_and_then_never_reuses_an_id(
    empty_database_url: str,
) -> None:
    """0013 rebuilds the tables whose ids leave Mailroom on SQLite (with AUTOINCREMENT, or a
    deleted newest row's id was given again). Every row, index and reference comes through,
    and ids go on from the largest there."""
    url = empty_database_url
    config = alembic_config(url)
    command.upgrade(config, "0012")
    engine = make_engine(url)
    _fill_empty_tables(engine)
    tables = sa.MetaData()
    tables.reflect(engine)
    with engine.begin() as conn:
        for name in REBUILT:
            conn.execute(tables.tables[name].insert().values(_row(tables.tables[name], 2)))
    before = (_structure(engine), _rows(engine))
    engine.dispose()

    command.upgrade(config, "0013")

    assert _structure(engine) == before[0]
    assert _rows(engine) == before[1]
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            counted = dict(
                map(tuple, conn.exec_driver_sql("SELECT name, seq FROM sqlite_sequence"))
            )
            assert counted == dict.fromkeys(REBUILT, 2)
        for name in REBUILT:
            table = tables.tables[name]
            conn.execute(table.delete().where(table.c.id == 2))  # the newest row
            added = conn.execute(table.insert().values(_row(table, 3)).returning(table.c.id))
            assert added.scalar_one() == 3, f"{name} gave a deleted row's id again"
    engine.dispose()


def test_a_process_that_does_not_migrate_refuses_a_schema_older_than_its_release(
    empty_database_url: str, settings: Settings, tmp_path: Path
) -> None:
    """With MAILROOM_AUTO_MIGRATE=false (as several processes must run), a process of a new
    release started before `mailroom migrate` used to start, answer /readyz ready and then
    answer every message 451. A schema newer than the release (migrated for the next one,
    during a rolling upgrade) is left to the release notes."""
    head = _revisions(empty_database_url)[-1]
    command.upgrade(alembic_config(empty_database_url), "0008")
    behind = settings.model_copy(update={"database_url": empty_database_url, "auto_migrate": False})
    with pytest.raises(StartError) as refused:
        build_runtime(behind)
    assert str(refused.value) == (
        f"the database schema is at revision 0008, and this release needs {head}: "
        "back up the database, then run `mailroom migrate`"
    )

    command.upgrade(alembic_config(empty_database_url), "head")
    build_runtime(behind).close()


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_upgrading_to_0016_makes_the_owners_of_a_held_message_hold_it_until_its_deadline(
    empty_database_url: str,
) -> None:
    """Each owner's copy gets a state of its own: the message's outcome, and while held its
    review period; downgrading leaves the messages as they were."""
    url = empty_database_url
    config = alembic_config(url)
    command.upgrade(config, "0015")
    engine = make_engine(url)
    _fill_empty_tables(engine)  # message 1, owned by employee 1
    tables = sa.MetaData()
    tables.reflect(engine, only=["employees", "messages", "message_owners"])
    messages, owners = tables.tables["messages"], tables.tables["message_owners"]
    deadline = datetime(2026, 12, 8, 14, 5, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            tables.tables["employees"].insert().values(_row(tables.tables["employees"], 2))
        )
        conn.execute(messages.update().values(outcome="capture"))
        held = conn.scalar(
            messages.insert()
            .values(_row(messages, 2) | {"outcome": "hold", "held_until": deadline})
            .returning(messages.c.id)
        )
        for employee in (1, 2):
            conn.execute(
                owners.insert().values(
                    _row(owners, 2) | {"message_id": held, "employee_id": employee}
                )
            )
    engine.dispose()

    command.upgrade(config, "0016")

    with engine.connect() as conn:
        states = conn.execute(
            sa.select(
                MessageOwner.message_id,
                MessageOwner.employee_id,
                MessageOwner.outcome,
                MessageOwner.held_until,
            ).order_by(MessageOwner.message_id, MessageOwner.employee_id)
        ).all()
    engine.dispose()
    assert [tuple(s) for s in states] == [
        (1, 1, "capture", None),
        (held, 1, "hold", deadline),
        (held, 2, "hold", deadline),
    ]
    command.downgrade(config, "0015")
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(owners)) == 3
    engine.dispose()


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_upgrading_to_0017_names_each_owners_own_decision_where_one_is_known(
    empty_database_url: str,
) -> None:
    """Each copy gets the newest of its owner's decisions that filed the message (a receipt
    links them), one with the copy's own outcome first; a copy none is left for gets the
    message's. Downgrading keeps every copy."""
    url = empty_database_url
    config = alembic_config(url)
    command.upgrade(config, "0016")
    engine = make_engine(url)
    _fill_empty_tables(engine)  # message 1, decided by decision 1 for employee 1, its owner
    tables = sa.MetaData()
    tables.reflect(engine, only=["employees", "decisions", "receipts", "message_owners"])
    employees, decisions = tables.tables["employees"], tables.tables["decisions"]
    receipts, owners = tables.tables["receipts"], tables.tables["message_owners"]
    with engine.begin() as conn:
        conn.execute(owners.update().values(outcome="capture"))
        for n in (2, 3):  # employee 2's capture of message 1, and its later metadata copy
            outcome = "capture" if n == 2 else "metadata_only"
            values = _row(decisions, n) | {"employee_id": 2, "outcome": outcome}
            conn.execute(decisions.insert().values(values))
            conn.execute(receipts.insert().values(_row(receipts, n) | {"decision_id": n}))
        for n in (2, 3):  # the copies of employees 2 and 3 (none of 3's decisions is left)
            conn.execute(employees.insert().values(_row(employees, n)))
            copy = _row(owners, n) | {"employee_id": n, "outcome": "capture"}
            conn.execute(owners.insert().values(copy))
    engine.dispose()

    command.upgrade(config, "0017")

    with engine.connect() as conn:
        named = conn.execute(
            sa.select(MessageOwner.employee_id, MessageOwner.decision_id).order_by(
                MessageOwner.employee_id
            )
        ).all()
    engine.dispose()
    assert [tuple(n) for n in named] == [(1, 1), (2, 2), (3, 1)]
    command.downgrade(config, "0016")
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(owners)) == 3
    engine.dispose()
