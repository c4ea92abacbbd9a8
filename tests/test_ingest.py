"""The SMTP group writer in a process of its own (app/ingest.py): the same promises as the
writer thread, across a process boundary that can fail on its own."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.ingest import WORK_OUT_BYTES, WriterProcess, _fields, submission_from, worked_out
from app.models import DecisionRecord, Message
from app.runtime import build_runtime
from app.security import Role
from app.settings import Settings, WriterMode
from capture.parse import ParsedMessage, message_fields, message_from_fields, parse_message
from capture.pipeline import Envelope
from capture.writer import Submission, commit_batch
from policies import observe as observe_module
from policies.loader import load_policy_text
from policies.model import Channel
from policies.personal_words import PersonalScore, score_personal
from tests.conftest import (
    CAPTURE,
    CORPORA,
    FIXTURES,
    TEST_SECRET,
    Running,
    add_employee,
    issue_token,
    run_service,
    write_lock,
)
from tests.mail import compose, send
from tests.test_policy_api import LIST_MAIL_KEPT, put_policy
from tests.test_policy_in_force import NEWSLETTER

PERSONAL_AND_NOT = ("personal.eml", "business.eml", "family.eml", "newsletter.eml", "private.eml")


@pytest.fixture
def served(settings: Settings) -> Iterator[Running]:
    with run_service(settings.model_copy(update={"smtp_writer": WriterMode.PROCESS})) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        yield running


def _writer(running: Running) -> WriterProcess:
    writer = running.service.writer
    assert isinstance(writer, WriterProcess)
    return writer


def _writer_pid(running: Running) -> int | None:
    link = _writer(running)._link
    return link.process.pid if link is not None else None


def _until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _count(running: Running, table: type[Message] | type[DecisionRecord]) -> int:
    with running.runtime.sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_the_writer_is_another_process_and_a_retry_is_answered_from_its_receipt(
    served: Running,
) -> None:
    pid = _writer_pid(served)

    first = send(served.smtp_port, compose())
    retry = send(served.smtp_port, compose())

    assert pid is not None and pid != os.getpid()
    assert first[0] == retry[0] == 250
    assert first[1].split()[-1] == retry[1].split()[-1], "the retry names the same decision"
    assert _count(served, Message) == 1


def test_a_policy_published_through_the_api_decides_the_very_next_message(
    served: Running,
) -> None:
    token = issue_token(served.runtime.sessions, Role.COMPLIANCE)
    list_mail = compose(subject="Deals", message_id="<deals-1@example.com>", headers=NEWSLETTER)
    assert put_policy(served, token, LIST_MAIL_KEPT)["status"] == 200

    assert send(served.smtp_port, list_mail)[0] == 250

    with served.runtime.sessions() as session:
        row = session.execute(sa.select(DecisionRecord.outcome, DecisionRecord.policy_sha256)).one()
    assert tuple(row) == ("capture", load_policy_text(LIST_MAIL_KEPT).policy.sha256)


def test_a_killed_writer_process_answers_451_and_a_new_one_takes_the_retry(
    served: Running,
) -> None:
    killed = _writer_pid(served)
    assert killed is not None
    with ThreadPoolExecutor(1) as pool, write_lock(served):
        in_flight: Future[tuple[int, bytes]] = pool.submit(send, served.smtp_port, compose())
        _until(lambda: _writer(served).queue_depth == 1)
        os.kill(killed, signal.SIGKILL)
        code, reply = in_flight.result(timeout=30)

    assert (code, reply[:5]) == (451, b"4.3.0")
    _until(lambda: _writer_pid(served) not in (None, killed))
    assert send(served.smtp_port, compose())[0] == 250
    assert _count(served, Message) == 1


def test_stopping_commits_every_message_already_handed_to_the_writer(
    served: Running, sessions: sessionmaker[Session]
) -> None:
    pid = _writer_pid(served)
    with ThreadPoolExecutor(3) as pool:
        with write_lock(served):
            sent = [
                pool.submit(send, served.smtp_port, compose(message_id=f"<stop-{n}@x.example>"))
                for n in range(3)
            ]
            _until(lambda: _writer(served).queue_depth == 3)
            stopping = asyncio.run_coroutine_threadsafe(served.service.stop(), served.loop)
            _until(lambda: _writer(served)._closing)
        stopping.result(timeout=60)
        replies = [future.result(timeout=30)[0] for future in sent]

    assert pid is not None
    assert replies == [250, 250, 250]
    with sessions() as session:  # the service's own engine is closed by now
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 3
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_message_of_many_megabytes_crosses_to_the_writer_process(served: Running) -> None:
    big = compose(body="A quote for the licences, line after line.\n" * 300_000)  # ~13 MB

    code, reply = send(served.smtp_port, big)

    assert (code, reply[:5]) == (250, b"2.0.0")
    with served.runtime.sessions() as session:
        size = session.scalar(sa.select(Message.size))
    assert size is not None and size > 12_000_000


def test_the_writer_process_outlives_a_signal_to_the_process_group(served: Running) -> None:
    """Ctrl-C in a terminal, or a service manager's SIGTERM, reaches every process of the
    group: the writer leaves stopping to the listener, which drains it first."""
    pid = _writer_pid(served)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    time.sleep(0.5)

    assert send(served.smtp_port, compose())[0] == 250
    assert _writer_pid(served) == pid


def test_a_writer_process_killed_while_stopping_leaves_a_451_and_the_stop_completes(
    served: Running,
) -> None:
    pid = _writer_pid(served)
    assert pid is not None
    with ThreadPoolExecutor(1) as pool:
        with write_lock(served):
            in_flight = pool.submit(send, served.smtp_port, compose())
            _until(lambda: _writer(served).queue_depth == 1)
            stopping = asyncio.run_coroutine_threadsafe(served.service.stop(), served.loop)
            _until(lambda: _writer(served)._closing)
            os.kill(pid, signal.SIGKILL)
            code, reply = in_flight.result(timeout=30)
        stopping.result(timeout=30)  # once the lock is gone: the purge job's run waits for it

    assert (code, reply[:5]) == (451, b"4.3.0")


def test_readiness_fails_while_the_writer_process_is_gone(served: Running) -> None:
    killed = _writer_pid(served)
    assert killed is not None
    with served.client(None) as client:
        assert client.get("/readyz").json()["checks"]["smtp-writer"] is True
        os.kill(killed, signal.SIGKILL)
        _until(lambda: _writer_pid(served) is None)
        gone = client.get("/readyz")
        _until(lambda: _writer_pid(served) not in (None, killed))
        back = client.get("/readyz")

    assert (gone.status_code, gone.json()["checks"]["smtp-writer"]) == (503, False)
    assert back.status_code == 200


def test_a_failing_database_write_in_the_writer_process_answers_451_and_the_retry_succeeds(
    served: Running, sessions: sessionmaker[Session]
) -> None:
    with served.runtime.db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE receipts RENAME TO receipts_away"))

    failed = send(served.smtp_port, compose())

    with served.runtime.db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE receipts_away RENAME TO receipts"))
    retried = send(served.smtp_port, compose())

    assert (failed[0], failed[1][:5]) == (451, b"4.3.0")
    assert retried[0] == 250
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 1


def _wire(raw: bytes, envelope: Envelope, channel: Channel) -> Submission:
    """A submission as the writer process gets it: the listener's frame, pickled and back."""
    ahead = worked_out(raw, envelope) if len(raw) <= WORK_OUT_BYTES else None
    frame = pickle.loads(pickle.dumps((raw, _fields(envelope), channel.value, ahead)))
    return submission_from(*frame)


def test_a_parsed_message_crosses_to_the_writer_process_unchanged() -> None:
    paths = sorted(FIXTURES.glob("*.eml"))
    if CORPORA.is_dir():
        paths += sorted(CORPORA.glob("*/messages/**/*.txt"))[:3000]
    for path in paths:
        raw = path.read_bytes()
        message = parse_message(raw)
        back = message_from_fields(pickle.loads(pickle.dumps(message_fields(message))), raw)
        assert back == message and back.raw is raw, path
        assert repr(back.date) == repr(message.date), path  # the same offset, not just instant


def test_what_the_listener_works_out_leaves_every_decision_as_the_writer_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same messages decided twice on fresh databases: as the writer process gets them
    from the listener (parsed and observed ahead), and from their bytes alone."""
    forward = compose(
        to=CAPTURE,
        subject="Fwd: Delivery dates",
        body="Please file this.\n\n---------- Forwarded message ---------\n"
        "From: Dana Seller <dana@supplier.example>\nSubject: Delivery dates\n\n"
        "We can deliver the 20 units on 1 December. Love to the kids!\n",
        message_id="<fwd-dana@example.com>",
    )
    raws = [
        *((FIXTURES / n).read_bytes().replace(b"\n", b"\r\n") for n in PERSONAL_AND_NOT),
        forward.as_bytes().replace(b"\n", b"\r\n"),
        compose(body="Quote attached.\n" + "x" * 40_000 + "\n").as_bytes(),  # left to the writer
    ]
    envelope = Envelope("alice@example.com", (CAPTURE,))
    scorings: list[str] = []

    def counted(subject: str, text: str, *, recipients: int = 1) -> PersonalScore:
        scorings.append(subject)
        return score_personal(subject, text, recipients=recipients)

    monkeypatch.setattr(observe_module, "score_personal", counted)
    automations: list[str] = []
    automation = observe_module._message_automation

    def counted_automation(message: ParsedMessage) -> tuple[dict[str, Any], str]:
        automations.append(message.subject)
        return automation(message)

    monkeypatch.setattr(observe_module, "_message_automation", counted_automation)

    decided = {}
    for way, submit in (("ahead", _wire), ("plain", Submission)):
        settings = Settings(
            data_dir=tmp_path / way,
            org_domains=["example.com"],
            capture_addresses=[CAPTURE],
            secret_key=TEST_SECRET,
        )
        runtime = build_runtime(settings)
        try:
            add_employee(runtime.sessions, "alice@example.com")
            submissions = [submit(raw, envelope, Channel.BCC) for raw in raws]
            scorings.clear()
            automations.clear()
            outcomes = commit_batch(runtime.pipeline, submissions)
            assert not [o for o in outcomes if isinstance(o, Exception)]
            with runtime.sessions() as session:
                rows = session.execute(
                    sa.select(
                        DecisionRecord.channel,
                        DecisionRecord.outcome,
                        DecisionRecord.rules,
                        DecisionRecord.verdicts,
                        DecisionRecord.facts,
                    ).order_by(DecisionRecord.id)
                )
                decided[way] = ([tuple(row) for row in rows], list(scorings), list(automations))
        finally:
            runtime.close()

    (ahead, scored_in_writer, observed_in_writer), (plain, scored_plain, observed_plain) = (
        decided["ahead"],
        decided["plain"],
    )
    assert ahead == plain
    kinds = [row[1] for row in plain]
    assert "drop" in kinds and len(set(kinds)) >= 3, kinds
    assert len(scored_plain) == len(observed_plain) == len(raws)
    # Ahead, the writer observed only the forward (its original) and the large message.
    assert scored_in_writer == ["Delivery dates", "Quote for 20 licences"]
    assert observed_in_writer == scored_in_writer
