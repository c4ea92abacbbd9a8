"""Held messages wait for review for the policy's period, then are removed; decisions stay."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app import ledger, review
from app.db import scrub_wal, transaction
from app.models import DecisionRecord, LedgerGap, Message, MessageOwner, Receipt, Thread
from app.retention import purge_expired_holds, purge_once
from capture.pipeline import Envelope
from policies.engine import PolicyError
from policies.loader import load_policy_text
from policies.model import Channel
from tests.conftest import FIXTURES, Running, add_employee, everything_stored, server_url
from tests.mail import compose

PLUMBING = (FIXTURES / "plumbing-policy.yaml").read_text()


def test_a_held_message_is_removed_after_its_review_period(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    note = compose(to="Alice <alice@example.com>", message_id="<note-to-self@example.com>")
    result = running.runtime.pipeline.process(
        note.as_bytes(), Envelope("alice@example.com"), Channel.BCC
    )
    assert result.outcome.value == "hold"

    with transaction(running.runtime.sessions) as session:
        early = purge_expired_holds(session, datetime.now(UTC) + timedelta(days=6))
    with transaction(running.runtime.sessions) as session:
        late = purge_expired_holds(session, datetime.now(UTC) + timedelta(days=8))

    assert (early, late) == (0, 1)
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 1


def test_a_purged_hold_leaves_no_text_in_the_database_files(running: Running) -> None:
    """SQLite keeps deleted pages in its write-ahead log until a checkpoint truncates it:
    the scheduled run does that after it purges."""
    add_employee(running.runtime.sessions, "alice@example.com")
    note = compose(to="Alice <alice@example.com>", subject="CANARY-SUBJECT", body="CANARY-BODY\n")
    result = running.runtime.pipeline.process(
        note.as_bytes(), Envelope("alice@example.com"), Channel.BCC
    )
    assert result.outcome.value == "hold"
    with transaction(running.runtime.sessions) as session:  # its review period is over
        session.execute(sa.update(MessageOwner).values(held_until=datetime.now(UTC) - timedelta(1)))

    runtime = running.runtime
    assert purge_once(runtime.db, runtime.sessions, lambda: runtime.pipeline.engine.policy) == 1
    assert b"CANARY" not in everything_stored(running)


@pytest.mark.skipif(server_url() is not None, reason="SQLite's write-ahead log")
def test_a_scrub_waits_for_another_connections_checkpoint_rather_than_give_up(
    running: Running,
) -> None:
    """SQLite answers a checkpoint begun while another connection's is running with "busy" at
    once, without the busy handler. The retention job's scrub and an erasure's ran into each
    other that way (one CI run in many), and the log kept what they had just removed."""
    database = Path(running.runtime.settings.data_dir) / "mailroom.db"
    add_employee(running.runtime.sessions, "alice@example.com")  # something in the log
    reader = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM employees").fetchone()  # keeps the log for a while
    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA busy_timeout=10000")
    checkpoint = threading.Thread(
        target=lambda: other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    )
    checkpoint.start()  # waits for the reader, holding the checkpoint lock meanwhile
    threading.Timer(0.5, reader.execute, ("COMMIT",)).start()
    try:
        time.sleep(0.2)
        scrubbed = scrub_wal(running.runtime.db)
    finally:
        checkpoint.join(timeout=15)
        reader.close()
        other.close()

    assert scrubbed is True
    assert Path(f"{database}-wal").stat().st_size == 0


def test_a_purged_hold_leaves_no_thread_behind(running: Running) -> None:
    """A thread's key is a digest of its root Message-ID, or of its subject and
    participants, and its dates are its mail's: one left with no message goes too."""
    add_employee(running.runtime.sessions, "alice@example.com")
    kept = compose(message_id="<kept@example.com>")
    note = compose(to="Alice <alice@example.com>", subject="Dinner", message_id="<note@x>")
    outcomes = [
        running.runtime.pipeline.process(m.as_bytes(), Envelope("alice@example.com"), Channel.BCC)
        for m in (kept, note)
    ]
    assert [r.outcome.value for r in outcomes] == ["capture", "hold"]

    with transaction(running.runtime.sessions) as session:
        assert purge_expired_holds(session, datetime.now(UTC) + timedelta(days=8)) == 1

    with running.runtime.sessions() as session:
        threads = session.scalars(sa.select(Thread.id)).all()
        kept_thread = session.scalar(sa.select(Message.thread_id))
    assert threads == [kept_thread]


def test_sixty_six_thousand_holds_expiring_at_once_are_purged_with_their_threads(
    running: Running,
) -> None:
    """An import of a long history under a policy that holds much of it: its holds expire
    together, more than one statement may name (PostgreSQL binds 65,535 values at most)."""
    add_employee(running.runtime.sessions, "alice@example.com")
    note = compose(to="Alice <alice@example.com>", message_id="<note@x>")
    running.runtime.pipeline.process(note.as_bytes(), Envelope("alice@example.com"), Channel.BCC)
    now = datetime.now(UTC)
    with transaction(running.runtime.sessions) as session:
        held = session.scalars(sa.select(Message)).one()
        owner = session.scalars(sa.select(MessageOwner)).one()
        first = session.scalar(sa.select(sa.func.max(Thread.id))) or 0
        count = 66_000
        session.execute(
            sa.insert(Thread),
            [{"key": f"k{n}", "created_at": now, "last_message_at": now} for n in range(count)],
        )
        copy = {c: getattr(held, c) for c in ("content_digest", "direction", "outcome", "size")}
        rows = [
            copy
            | {
                "dedupe_key": f"d{n}",
                "visibility": "private",
                "held_until": now,
                "decision_id": held.decision_id,
                "thread_id": first + 1 + n,
            }
            for n in range(count)
        ]
        ids = session.scalars(sa.insert(Message).returning(Message.id), rows).all()
        session.execute(
            sa.insert(MessageOwner),
            [
                {
                    "message_id": message_id,
                    "employee_id": owner.employee_id,
                    "channel": "import",
                    "created_at": now,
                    "outcome": "hold",
                    "held_until": now,
                }
                for message_id in ids
            ],
        )

    with transaction(running.runtime.sessions) as session:
        assert purge_expired_holds(session, now + timedelta(days=8)) == count + 1

    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Thread)) == 0


def _decide(running: Running, to: str, n: int) -> str:
    mail = compose(to=to, message_id=f"<purge-{n}@example.com>")
    result = running.runtime.pipeline.process(
        mail.as_bytes(), Envelope("alice@example.com"), Channel.BCC
    )
    return result.outcome.value


def test_expired_decision_records_go_but_those_of_kept_messages_and_the_rest_verifies(
    running: Running,
) -> None:
    """The purge removed the log's oldest records as a prefix, stopping at the first one a
    stored message refers to: with captures kept, the first capture's, so `decision_days`
    removed nothing after it ever again. Every expired record that no stored message refers
    to goes now; the runs removed are noted, and the log still verifies."""
    add_employee(running.runtime.sessions, "alice@example.com")
    carol, bob = "Carol <carol@example.com>", "Bob <bob@customer.example>"
    outcomes = [
        _decide(running, to, n) for n, to in enumerate([carol, bob, carol, carol, bob, carol])
    ]
    with running.runtime.sessions() as session:
        noted = ledger.verify(session)

    removed = _purge_a_day_ahead(running)
    with running.runtime.sessions() as session:
        left = _records(session)
        runs = session.execute(
            sa.select(LedgerGap.from_id, LedgerGap.through_id).order_by(LedgerGap.through_id)
        ).all()
        verified = ledger.verify(session)
        still = ledger.verify(session, anchor=ledger.Anchor(6, str(noted.head_hash)))
        forged = ledger.verify(session, anchor=ledger.Anchor(6, "0" * 64))
    again = _purge_a_day_ahead(running)

    assert outcomes == ["drop", "capture", "drop", "drop", "capture", "drop"]
    assert removed == 4  # records 2 and 5 explain stored messages
    assert left == [(2, "capture"), (5, "capture"), (7, "ledger-purge")]
    assert [tuple(r) for r in runs] == [(1, 1), (3, 4), (6, 6)]
    assert (verified.ok, verified.checked, verified.head_id) == (True, 3, 7)
    assert still.ok and (forged.ok, forged.problem) == (
        False,
        "record differs from the anchor noted",
    )
    assert again == 0


def _purge_a_day_ahead(running: Running) -> int:
    """The log's purge as it runs a day from now, when every record written so far has
    expired: how many it removed."""
    later = datetime.now(UTC) + timedelta(days=1)
    policy = running.runtime.pipeline.engine.policy
    with transaction(running.runtime.sessions) as session:
        return ledger.purge_before(session, later, policy_sha256=policy.sha256, now=later)


def _records(session: Session) -> list[tuple[int, str]]:
    """The log's records left: id and outcome (or action), oldest first."""
    rows = session.execute(
        sa.select(DecisionRecord.id, DecisionRecord.outcome).order_by(DecisionRecord.id)
    )
    return [(int(record_id), str(outcome)) for record_id, outcome in rows]


def test_the_purge_keeps_the_decision_behind_each_owners_copy_of_shared_mail(
    running: Running,
) -> None:
    """The same mail from Alice and from Carol is one message, which names Alice's decision;
    Carol's copy names her own. The purge kept only what messages named: it would remove
    the decision that explains Carol's copy (a database that enforces the reference
    refused, and every purge failed from then on)."""
    add_employee(running.runtime.sessions, "alice@example.com")
    add_employee(running.runtime.sessions, "carol@example.com")
    shared = compose(to="Bob <bob@customer.example>, Carol <carol@example.com>").as_bytes()
    outcomes = [
        running.runtime.pipeline.process(shared, Envelope(f"{who}@example.com"), Channel.BCC)
        for who in ("alice", "carol")
    ]
    dropped = _decide(running, "Carol <carol@example.com>", 3)

    removed = _purge_a_day_ahead(running)
    with running.runtime.sessions() as session:
        left = _records(session)
        copies = session.scalars(sa.select(MessageOwner.decision_id).order_by(MessageOwner.id))
        named = list(copies)
        verified = ledger.verify(session)

    assert [(r.outcome.value, r.decision_id) for r in outcomes] == [("capture", 1), ("capture", 2)]
    assert (dropped, removed, named) == ("drop", 1, [1, 2])
    assert left == [(1, "capture"), (2, "capture"), (4, "ledger-purge")]
    assert verified.ok, verified.problem


def test_a_log_an_older_release_purged_as_a_prefix_still_verifies_after_new_purges(
    running: Running,
) -> None:
    """Before runs were noted, a purge removed a prefix and named where it ended (facts
    `through_id`, `through_hash`); the runs a purge removes now follow it."""
    add_employee(running.runtime.sessions, "alice@example.com")
    carol, bob = "Carol <carol@example.com>", "Bob <bob@customer.example>"
    for n, to in enumerate([carol, carol, carol, bob, carol]):
        _decide(running, to, n)  # records 1-5, the fourth's message kept
    policy = running.runtime.pipeline.engine.policy
    later = datetime.now(UTC) + timedelta(days=1)
    with transaction(running.runtime.sessions) as session:  # as the older release purged
        head = session.scalars(sa.select(DecisionRecord).where(DecisionRecord.id == 5)).one()
        through = session.scalars(sa.select(DecisionRecord).where(DecisionRecord.id == 2)).one()
        old = {"removed": 2, "through_id": 2, "through_hash": through.hash}
        session.execute(sa.delete(Receipt).where(Receipt.decision_id <= 2))
        session.execute(sa.delete(DecisionRecord).where(DecisionRecord.id <= 2))
        action = ledger.Action(later, ledger.PURGE_KIND, None, policy.sha256, old)
        ledger.append_action(session, action, after=(5, head.hash))
    with transaction(running.runtime.sessions) as session:
        removed = ledger.purge_before(session, later, policy_sha256=policy.sha256, now=later)

    with running.runtime.sessions() as session:
        left = list(session.scalars(sa.select(DecisionRecord.id).order_by(DecisionRecord.id)))
        verified = ledger.verify(session)

    assert removed == 2 and left == [4, 6, 7]  # records 3 and 5 went now
    assert (verified.ok, verified.checked) == (True, 3), verified.problem


def _remove_by_hand(session: Session, decision_id: int) -> None:
    """A record removed as someone with the database's password could: its message first."""
    session.execute(sa.delete(Receipt).where(Receipt.decision_id == decision_id))
    session.execute(sa.delete(Message).where(Message.decision_id == decision_id))
    session.execute(sa.delete(DecisionRecord).where(DecisionRecord.id == decision_id))


def _and_account_for_it(session: Session) -> None:
    _remove_by_hand(session, 5)
    run = {"from_id": 5, "through_id": 5, "through_hash": "x", "purge_id": 7}
    session.execute(sa.insert(LedgerGap).values(run))


@pytest.mark.parametrize(
    ("tamper", "first_broken", "problem"),
    [
        (  # a record removed by hand, next to a run the purge removed
            lambda session: _remove_by_hand(session, 5),
            7,
            "earlier records removed without a purge record",
        ),
        (_and_account_for_it, 7, "gaps noted that their purge record does not name"),
        (  # the purge's own record removed
            lambda session: _remove_by_hand(session, 7),
            1,
            "gaps noted that their purge record does not name",
        ),
    ],
)
def test_records_removed_other_than_by_the_purge_are_reported(
    running: Running, tamper: Callable[[Session], None], first_broken: int, problem: str
) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    carol, bob = "Carol <carol@example.com>", "Bob <bob@customer.example>"
    for n, to in enumerate([carol, bob, carol, carol, bob, carol]):
        _decide(running, to, n)
    _purge_a_day_ahead(running)
    with transaction(running.runtime.sessions) as session:
        tamper(session)

    with running.runtime.sessions() as session:
        tampered = ledger.verify(session)

    assert (tampered.ok, tampered.first_broken, tampered.problem) == (False, first_broken, problem)


def test_a_purge_of_the_whole_log_goes_on_from_its_ids_and_hashes(running: Running) -> None:
    """A quiet deployment whose every old decision dropped its message: the purge removes the
    whole log, and its own record comes next (id 3, not 1 again), chained from the hash it
    names, so a head noted before the purge still verifies and a forged one does not."""
    add_employee(running.runtime.sessions, "alice@example.com")
    assert [_decide(running, "Carol <carol@example.com>", n) for n in (1, 2)] == ["drop"] * 2
    with running.runtime.sessions() as session:
        noted = ledger.verify(session)
    assert noted.head_id == 2 and noted.head_hash is not None

    removed = _purge_a_day_ahead(running)
    _decide(running, "Carol <carol@example.com>", 3)
    with running.runtime.sessions() as session:
        left = session.execute(
            sa.select(DecisionRecord.id, DecisionRecord.outcome, DecisionRecord.prev_hash).order_by(
                DecisionRecord.id
            )
        ).all()
        still = ledger.verify(session, anchor=ledger.Anchor(2, noted.head_hash))
        forged = ledger.verify(session, anchor=ledger.Anchor(2, "0" * 64))

    assert removed == 2
    assert [tuple(r)[:2] for r in left] == [(3, "ledger-purge"), (4, "drop")]
    assert left[0].prev_hash == noted.head_hash
    assert (still.ok, still.checked, still.head_id) == (True, 2, 4)
    assert (forged.ok, forged.problem) == (False, "record differs from the anchor noted")


def _keeping_decisions(days: int) -> str:
    return PLUMBING.replace("metadata:", f"retention:\n  decision_days: {days}\nmetadata:", 1)


def test_the_longest_decision_retention_a_policy_may_set_is_applied(
    sessions: sessionmaker[Session],
) -> None:
    longest = load_policy_text(_keeping_decisions(36_500))

    assert purge_once(sessions.kw["bind"], sessions, lambda: longest.policy) == 0
    with pytest.raises(PolicyError) as refused:
        load_policy_text(_keeping_decisions(1_000_000))
    assert refused.value.problems == [
        "retention.decision_days: Input should be less than or equal to 36500"
    ]


def test_a_long_expired_log_is_purged_a_chunk_to_a_transaction_and_still_verifies(
    running: Running,
) -> None:
    """A lowered `decision_days` may free millions of records at once: removed in one
    transaction, they held the write lock past the SMTP writer's 30 s (451 for every
    message meanwhile). Each chunk is its own transaction, chained as a purge of its own."""
    add_employee(running.runtime.sessions, "alice@example.com")
    pipeline = running.runtime.pipeline
    pipeline.clock = lambda: datetime.now(UTC) - timedelta(days=60)
    try:
        outcomes = [_decide(running, "Carol <carol@example.com>", n) for n in range(7)]
    finally:
        pipeline.clock = lambda: datetime.now(UTC)
    month = load_policy_text(_keeping_decisions(30))
    sessions = running.runtime.sessions

    removed = purge_once(sessions.kw["bind"], sessions, lambda: month.policy, chunk=3)

    with sessions() as session:
        left = session.scalars(sa.select(DecisionRecord.outcome).order_by(DecisionRecord.id))
        purges = list(left)
        verified = ledger.verify(session)
    assert outcomes == ["drop"] * 7 and removed == 7
    assert purges == ["ledger-purge"] * 3  # 3, 3 and 1 records, a transaction each
    assert verified.ok and verified.checked == 3


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ("{larger-than: {bytes: %s}}" % (2**41), "larger-than.bytes"),
        ("{spamd-score: {above: .inf}}", "spamd-score.above"),
        ("{spamd-score: {above: .nan}}", "spamd-score.above"),
    ],
)
def test_a_predicate_number_no_message_could_reach_is_refused(when: str, problem: str) -> None:
    with pytest.raises(PolicyError) as refused:
        load_policy_text(PLUMBING.replace("when: bulk-mail", f"when: {when}", 1))
    assert problem in refused.value.problems[0]


def _bcc_at(running: Running, submitter: str, when: datetime) -> None:
    """The same mail with an outsider, BCC'd by `submitter` at `when` (held for review)."""
    mail = compose(
        sender="Alice <alice@example.com>", to="Dan <dan@customer.example>, Bob <bob@example.com>"
    )
    running.runtime.pipeline.clock = lambda: when
    result = running.runtime.pipeline.process(mail.as_bytes(), Envelope(submitter), Channel.BCC)
    assert result.outcome.value == "hold"


def _owners(running: Running) -> list[int]:
    with running.runtime.sessions() as session:
        return list(session.scalars(sa.select(MessageOwner.employee_id)))


def test_each_held_copy_waits_its_own_review_period(holding: Running) -> None:
    """Bob's copy of mail Alice had held five days earlier was purged with hers, at her
    deadline: he had two days of the seven the policy gives him to review it."""
    alice = add_employee(holding.runtime.sessions, "alice@example.com")
    bob = add_employee(holding.runtime.sessions, "bob@example.com")
    start = datetime.now(UTC)
    _bcc_at(holding, "alice@example.com", start)
    _bcc_at(holding, "bob@example.com", start + timedelta(days=5))
    assert sorted(_owners(holding)) == [alice, bob]

    with transaction(holding.runtime.sessions) as session:
        assert purge_expired_holds(session, start + timedelta(days=8)) == 1
    assert _owners(holding) == [bob]  # and the message, with its text, waits for him
    with transaction(holding.runtime.sessions) as session:
        assert purge_expired_holds(session, start + timedelta(days=13)) == 1
    with holding.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Thread)) == 0


def test_a_colleagues_capture_stays_when_my_held_copy_of_it_is_purged(holding: Running) -> None:
    """Alice captured the mail at review; Bob's copy of it, never reviewed, goes at the
    end of his period, and the message stays hers."""
    alice = add_employee(holding.runtime.sessions, "alice@example.com")
    add_employee(holding.runtime.sessions, "bob@example.com")
    start = datetime.now(UTC)
    _bcc_at(holding, "alice@example.com", start)
    _bcc_at(holding, "bob@example.com", start)
    with transaction(holding.runtime.sessions) as session:
        message = session.scalars(sa.select(Message)).one()
        review.capture(session, message, review.reviewer(holding.runtime, alice))

    with transaction(holding.runtime.sessions) as session:
        assert purge_expired_holds(session, start + timedelta(days=8)) == 1
    assert _owners(holding) == [alice]
    with holding.runtime.sessions() as session:
        assert session.scalars(sa.select(Message.outcome)).all() == ["capture"]
