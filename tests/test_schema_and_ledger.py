"""The schema is Alembic's, identical to the tables; the decision log's chain detects edits."""

from __future__ import annotations

import hmac
import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from app import decision_reports, ledger
from app.db import make_engine, session_factory, transaction
from app.models import Base, DecisionRecord
from capture.keyed import keyed_digest
from policies.model import Channel, Decision, Outcome, Verdict, Visibility


# SQLite's reflection cannot read expression indexes (PostgreSQL's can, and compares them).
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_migrations_create_exactly_the_tables_the_code_declares(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert differences == []


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_every_reference_is_indexed(database_url: str) -> None:
    """Deleting a row makes the database look for the rows that refer to it: without an index
    on the referring column it scans the whole table once for each row deleted (the hold
    purge, an erasure or the decision log's purge, against every receipt ever written)."""
    engine = sa.create_engine(database_url)
    inspector = sa.inspect(engine)
    unindexed = []
    for table in inspector.get_table_names():
        leading = {tuple(ix["column_names"][:1]) for ix in inspector.get_indexes(table)}
        leading |= {tuple(u["column_names"][:1]) for u in inspector.get_unique_constraints(table)}
        leading.add(tuple(inspector.get_pk_constraint(table)["constrained_columns"][:1]))
        for reference in inspector.get_foreign_keys(table):
            if tuple(reference["constrained_columns"][:1]) not in leading:
                unindexed.append(f"{table}.{reference['constrained_columns'][0]}")
    engine.dispose()
    assert unindexed == []


def test_the_tables_the_code_says_never_reuse_ids_are_those_the_migrations_made_so(
    database_url: str,
) -> None:
    """Alembic's comparison does not look at SQLite's AUTOINCREMENT (without which a deleted
    newest row's id is given again): the migrations and the tables must agree on it too."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's sequences never give an id twice, whatever the table says")
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        tables = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
        made = {name for name, sql in tables if "AUTOINCREMENT" in sql}
    engine.dispose()
    declared = {
        t.name
        for t in Base.metadata.tables.values()
        if t.dialect_options["sqlite"]["autoincrement"]
    }
    assert made == declared and "contacts" in made


def _append(sessions: sessionmaker[Session], n: int) -> None:
    with transaction(sessions) as session:
        ledger.append(session.connection(), _entry(n))


def _entry(n: int) -> ledger.Entry:
    decision = Decision(
        outcome=Outcome.DROP,
        policy_sha256="a" * 64,
        verdicts=(Verdict("internal-only", True, "every participant is internal"),),
        deciding_rule="internal-only",
        visibility=Visibility.SHARED,
        facts={"participants": n, "external_participants": 0},
    )
    return ledger.Entry(
        created_at=datetime.now(UTC),
        channel=Channel.BCC,
        employee_id=1,
        decision=decision,
        message_id_hmac=None,
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    facts=st.dictionaries(st.text(), JSON, max_size=8),
    rules=st.lists(st.text(), max_size=3),
    employee_id=st.none() | st.integers(1, 2**40),
    message_id_hmac=st.none() | st.text(max_size=64),
    odd_verdicts=st.lists(st.dictionaries(st.sampled_from(["id", "hit", "x"]), JSON), max_size=3),
)
def test_a_record_hashed_from_its_encoded_fields_hashes_as_verify_recomputes_it(
    facts: dict[str, object],
    rules: list[str],
    employee_id: int | None,
    message_id_hmac: str | None,
    odd_verdicts: list[dict[str, Any]],
) -> None:
    record = ledger.Chained(
        created_at=datetime(2026, 11, 23, 15, 4, 5, 6, tzinfo=UTC),
        channel="imap",
        employee_id=employee_id,
        outcome="hold",
        rules=rules,
        verdicts=[{"id": r, "hit": n % 2 == 0} for n, r in enumerate(rules)] + odd_verdicts,
        facts=facts,
        policy_sha256="b" * 64,
        message_id_hmac=message_id_hmac,
        id=7,
        prev_hash="c" * 64,
    )
    encoded = ledger._encoded_fields(record)

    assert ledger._canonical_encoded(record, encoded) == ledger.canonical(record)
    assert encoded == {c: ledger._ENCODE(getattr(record, c)) for c in ledger._JSON_COLUMNS}


@given(
    asked=st.lists(st.tuples(st.text(), st.booleans()), max_size=25),
    facts=st.dictionaries(st.text(), JSON, max_size=4),
)
def test_a_decision_appended_is_hashed_from_the_fields_the_encoder_writes(
    asked: list[tuple[str, bool]], facts: dict[str, Any]
) -> None:
    """`append` takes a decision's rules and verdicts encoded once per list of rules asked
    (remembered across decisions): the same text as the encoder writes, so the same hash."""
    verdicts = tuple(Verdict(rule, hit, f"reason {n}") for n, (rule, hit) in enumerate(asked))
    entry = _entry(0)
    decision = replace(entry.decision, verdicts=verdicts, facts=facts)
    record = ledger.unchained(replace(entry, decision=decision))

    assert ledger._encoded_fields(record) == {
        c: ledger._ENCODE(getattr(record, c)) for c in ledger._JSON_COLUMNS
    }


def test_records_stored_from_their_encoded_fields_read_back_and_verify(
    sessions: sessionmaker[Session],
) -> None:
    awkward: list[dict[str, Any]] = [
        {"text": 'Grüße, 東京 \u2028 "quoted" \\ back', "nested": {"b": [1.5, None], "a": True}},
        {"float": 1e-7, "big": 2**53 + 1, "neg": -0.0, "empty": {}, "list": []},
    ]
    for facts in awkward:
        entry = _entry(0)
        entry = replace(entry, decision=replace(entry.decision, facts=facts))
        with transaction(sessions) as session:
            ledger.append(session.connection(), entry)

    with sessions() as session:
        stored = [
            r.facts for r in session.scalars(sa.select(DecisionRecord).order_by(DecisionRecord.id))
        ]
        result = ledger.verify(session)

    assert stored == awkward
    assert (result.ok, result.checked) == (True, 2)


def test_ledger_verifies_an_untouched_chain(sessions: sessionmaker[Session]) -> None:
    for n in range(5):
        _append(sessions, n)

    with sessions() as session:
        result = ledger.verify(session)

    assert (result.ok, result.checked, result.first_broken) == (True, 5, None)


def test_appends_in_savepoints_rolled_back_or_released_leave_one_unbroken_chain(
    sessions: sessionmaker[Session],
) -> None:
    """The group writer's fallback: one transaction, each message in a savepoint, some rolled
    back. Appends after a rolled-back savepoint chain to what was kept, not to what was not."""
    _append(sessions, 0)
    with sessions() as session, session.begin():
        conn = session.connection()
        kept = [ledger.append(conn, _entry(1)).id]
        with conn.begin_nested():
            kept.append(ledger.append(conn, _entry(2)).id)
        savepoint = conn.begin_nested()
        ledger.append(conn, _entry(3))
        ledger.append(conn, _entry(4))
        savepoint.rollback()
        kept.append(ledger.append(conn, _entry(5)).id)
        with conn.begin_nested():
            kept.append(ledger.append(conn, _entry(6)).id)
            kept.append(ledger.append(conn, _entry(7)).id)
    _append(sessions, 8)

    with sessions() as session:
        result = ledger.verify(session)
        ids = session.scalars(sa.select(DecisionRecord.id).order_by(DecisionRecord.id)).all()

    assert (result.ok, result.checked, result.first_broken) == (True, 7, None)
    assert kept == [2, 3, 4, 5, 6] and ids == [1, 2, 3, 4, 5, 6, 7]


def test_ledger_names_the_first_record_edited_behind_its_back(
    sessions: sessionmaker[Session],
) -> None:
    for n in range(5):
        _append(sessions, n)
    with transaction(sessions) as session:
        session.execute(
            sa.update(DecisionRecord).where(DecisionRecord.id == 3).values(outcome="capture")
        )

    with sessions() as session:
        result = ledger.verify(session)

    assert (result.ok, result.first_broken) == (False, 3)
    assert result.problem == "record altered after writing"


def test_ledger_names_a_record_whose_rules_were_rewritten_as_the_same_json(
    sessions: sessionmaker[Session],
) -> None:
    """The same list in other text parses (and hashes) alike, but a rule filter reads the
    text: `["intern\\u0061l-only"]` is no longer found by ?rule=internal-only."""
    for n in range(3):
        _append(sessions, n)
    with transaction(sessions) as session:
        session.execute(
            sa.text("UPDATE decisions SET rules = :rules WHERE id = 2"),
            {"rules": '["intern\\u0061l-only"]'},
        )

    with sessions() as session:
        rewritten = session.get(DecisionRecord, 2)
        assert rewritten is not None and rewritten.rules == ["internal-only"]
        found = decision_reports.decisions(
            session, decision_reports.Filters(rule="internal-only"), before=None, limit=50
        )
        result = ledger.verify(session)

    assert [r.id for r in found] == [3, 1]
    assert (result.ok, result.first_broken) == (False, 2)
    assert result.problem == "record stored in another form than written"


def test_ledger_verifies_records_whose_json_was_written_as_releases_before_2026_11_23_did(
    sessions: sessionmaker[Session],
) -> None:
    """Those wrote the JSON columns through SQLAlchemy's JSON type: `json.dumps` with its
    default separators. The same values, the same hash, and nothing a filter reads is lost."""
    for n in range(3):
        _append(sessions, n)
    with transaction(sessions) as session:
        for record in session.scalars(sa.select(DecisionRecord)):
            session.execute(
                sa.text(
                    "UPDATE decisions SET rules = :rules, verdicts = :verdicts, facts = :facts "
                    "WHERE id = :id"
                ),
                {
                    "id": record.id,
                    "rules": json.dumps(record.rules),
                    "verdicts": json.dumps(record.verdicts),
                    "facts": json.dumps(record.facts),
                },
            )
    with sessions() as session:
        stored = session.execute(sa.text("SELECT CAST(facts AS TEXT) FROM decisions")).scalars()
        assert all(", " in text for text in stored)  # control: the old form is what is there
        result = ledger.verify(session)

    assert result.ok and result.checked == 3


def test_ledger_names_a_record_whose_time_was_rewritten_at_another_utc_offset(
    sessions: sessionmaker[Session],
) -> None:
    """The same instant written with +12:00 reads back alike, but SQLite compares the text:
    the record leaves the since/until window (and the retention cutoff) it belongs to."""
    for n in range(3):
        _append(sessions, n)
    with sessions() as session:
        written = session.get(DecisionRecord, 2)
        assert written is not None
        at = written.created_at
    shifted = (at + timedelta(hours=12)).replace(tzinfo=None).isoformat(" ") + "+12:00"
    with transaction(sessions) as session:
        session.execute(
            sa.text("UPDATE decisions SET created_at = :at WHERE id = 2"), {"at": shifted}
        )

    window = decision_reports.Filters(since=at - timedelta(hours=1), until=at + timedelta(hours=1))
    with sessions() as session:
        rewritten = session.get(DecisionRecord, 2)
        assert rewritten is not None and rewritten.created_at == at
        found = {r.id for r in decision_reports.decisions(session, window, before=None, limit=50)}
        result = ledger.verify(session)

    if sessions.kw["bind"].dialect.name == "sqlite":
        assert 2 not in found
        assert (result.ok, result.first_broken) == (False, 2)
        assert result.problem == "record stored in another form than written"
    else:  # PostgreSQL keeps the instant, not the text: nothing was changed
        assert 2 in found and result.ok


def test_ledger_notices_a_deleted_record(sessions: sessionmaker[Session]) -> None:
    for n in range(4):
        _append(sessions, n)
    with transaction(sessions) as session:
        session.execute(sa.delete(DecisionRecord).where(DecisionRecord.id == 2))

    with sessions() as session:
        result = ledger.verify(session)

    assert (result.ok, result.first_broken) == (False, 3)


def test_a_purge_committed_while_verify_walks_the_log_is_no_break(database_url: str) -> None:
    """The retention job purges every 10 minutes, and walking a large log takes minutes: a
    purge of records verify has not reached yet must not read as records removed."""
    engine = make_engine(database_url)
    writers, readers = session_factory(engine), session_factory(engine, writer=False)
    now = datetime.now(UTC)
    with transaction(writers) as session:
        conn = session.connection()
        for n in range(2000):
            aged = now - timedelta(days=1000) if n < 1500 else now
            ledger.append(conn, replace(_entry(n), created_at=aged))
    walked: list[ledger.Verification] = []
    try:
        with readers() as session:
            walk = threading.Thread(target=lambda: walked.append(ledger.verify(session, batch=1)))
            walk.start()
            time.sleep(0.2)  # well into the walk, far from record 1500
            with transaction(writers) as purging:
                removed = ledger.purge_before(
                    purging, now - timedelta(days=730), policy_sha256="a" * 64, now=now
                )
            walk.join(timeout=60)
    finally:
        engine.dispose()

    assert removed == 1500
    assert walked[0].ok, walked[0]


@given(secret=st.binary(max_size=100), data=st.binary(max_size=300))
def test_keyed_digests_are_the_hmacs_earlier_releases_stored(secret: bytes, data: bytes) -> None:
    """Receipts, same-mail keys, thread keys and address tokens written before keyed_digest
    must still be found: it is HMAC-SHA256 exactly, for any key length."""
    assert keyed_digest(secret, data) == hmac.digest(secret, data, "sha256")
    assert keyed_digest(secret, data) == keyed_digest(secret, data)  # the prepared key unchanged
