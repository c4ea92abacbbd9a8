"""Promise 1: a dropped message leaves nothing but a content-free decision record."""

from __future__ import annotations

import io
import json
import logging
import smtplib
import socket
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.logs import LogFormat, configure
from app.models import DecisionRecord
from app.settings import Settings
from tests.conftest import CAPTURE, Running, add_employee, everything_stored
from tests.mail import compose, send
from tests.test_crash_safety import Server, free_port


def test_dropped_internal_message_leaves_no_trace_in_files_tables_or_logs(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_employee(running.runtime.sessions, "alice@example.com")
    kept, dropped = f"k{uuid.uuid4().hex}", f"d{uuid.uuid4().hex}"
    business = compose(subject=f"Offer {kept}", message_id=f"<{kept}@example.com>")
    personal = compose(
        sender=f"Alice {dropped}First <alice@example.com>",
        to=f"Partner {dropped}Name <{dropped}addr@example.com>",
        subject=f"Dinner on Friday? {dropped}SUBJ",
        body=f"Love you, see you at home. {dropped}BODY\n",
        message_id=f"<{dropped}MID@example.com>",
    )

    assert send(running.smtp_port, business)[0] == 250
    assert send(running.smtp_port, personal)[0] == 250

    stored = everything_stored(running)
    assert kept.encode() in stored, "control: captured content must be findable by this scan"
    assert dropped.encode() not in stored
    assert dropped not in caplog.text
    with running.runtime.sessions() as session:
        outcomes = session.scalars(sa.select(DecisionRecord.outcome).order_by(DecisionRecord.id))
        assert list(outcomes) == ["capture", "drop"]


def test_the_servers_logs_hold_no_subject_body_or_address_of_dropped_or_captured_mail(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """`mailroom serve` as a process, logging JSON at DEBUG: whatever it writes, no canary."""
    add_employee(sessions, "alice@example.com")
    log = tmp_path / "serve.log"
    server = Server(
        settings,
        free_port(),
        log=log,
        env={"MAILROOM_LOG_FORMAT": "json", "MAILROOM_LOG_LEVEL": "debug"},
    )
    canary = f"c{uuid.uuid4().hex}"
    captured = compose(
        to=f"Bob {canary}Name <{canary}bob@customer.example>",
        subject=f"Offer {canary}SUBJ",
        body=f"The quote. {canary}BODY\n",
        message_id=f"<{canary}kept@example.com>",
    )
    dropped = compose(
        to=f"Partner {canary}Home <{canary}home@example.com>",
        subject=f"Dinner on Friday? {canary}SUBJ",
        body=f"Love you, see you at home. {canary}BODY\n",
        message_id=f"<{canary}dropped@example.com>",
    )
    refused = compose(sender=f"Eve <{canary}eve@elsewhere.example>", message_id=f"<{canary}r@e.x>")
    server.start()
    try:
        assert send(server.port, captured)[0] == 250
        assert send(server.port, dropped)[0] == 250
        assert send(server.port, refused, mail_from=f"{canary}eve@elsewhere.example")[0] == 550
        assert send(server.port, captured, rcpt=f"{canary}@mailroom.example.com")[0] == 550
    finally:
        server.stop()

    lines = log.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e["event"].startswith("started") for e in events), "control: the log is captured"
    assert any(e["event"].startswith("writer process") for e in events), "control: its writer"
    assert sum(e["event"].startswith("decision ") for e in events) == 3, "control: at DEBUG"
    with sessions() as session:
        stored = list(
            session.scalars(sa.select(DecisionRecord.outcome).order_by(DecisionRecord.id))
        )
    assert stored == ["capture", "drop", "reject"]
    assert canary not in log.read_text()


def test_message_lines_pipelined_behind_a_refused_data_reach_no_log(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that pipelines its message behind DATA (wrongly) when RCPT was refused: each
    message line is read as a command, and aiosmtpd warns of its first word."""
    caplog.set_level(logging.DEBUG)
    add_employee(running.runtime.sessions, "alice@example.com")
    canary = f"c{uuid.uuid4().hex}"
    with socket.create_connection(("127.0.0.1", running.smtp_port), timeout=10) as sock:
        sock.sendall(
            b"EHLO client.example.com\r\nMAIL FROM:<alice@example.com>\r\n"
            b"RCPT TO:<wrong@mailroom.example.com>\r\nDATA\r\n"
            + f"From: alice@example.com\r\nTo: {canary}to@customer.example\r\n"
            f"Subject: {canary}SUBJ\r\n\r\n{canary}BODY at 40 per share\r\n.\r\n".encode()
            + b"QUIT\r\n"
        )
        replies = b""
        while chunk := sock.recv(4096):  # until the server hangs up
            replies += chunk
    assert b" not recognized" in replies, "control: the lines were read as commands"
    logged = [r.getMessage() for r in caplog.records if r.name == "mail.log"]
    assert any("unrecognised" in line for line in logged), "control: the warning is kept"
    assert canary.lower() not in "\n".join(r.getMessage() for r in caplog.records).lower()


def test_a_logged_exception_keeps_its_type_and_frames_but_not_its_message() -> None:
    """Database errors quote their parameters: a logged exception must not carry them."""
    canary = f"c{uuid.uuid4().hex}"
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure(LogFormat.JSON, level="DEBUG", stream=out)
        try:
            raise ValueError(f"INSERT failed for {canary}@customer.example")
        except ValueError:
            logging.getLogger("mailroom.test").exception("filing failed")
    finally:
        root.handlers, root.level = handlers, level
    event = json.loads(out.getvalue())
    assert (event["event"], event["error"]) == ("filing failed", "ValueError")
    assert "test_no_trace.py" in event["frames"][-1]
    assert canary not in out.getvalue()


def test_bounce_detectors_that_fail_log_nothing_in_any_process(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """flufl.bounce logs each detector that trips (8-bit headers do it) with a traceback: it is
    quiet wherever it is imported, not only once the server has configured logging."""
    from capture.parse import parse_message
    from policies.automated import bounce_signal

    caplog.set_level(logging.DEBUG)
    raw = (
        "From: Mail Delivery Syst\u00e8me <MAILER-DAEMON@mx.example.net>\r\n"
        "To: alice@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-8bit@mx.example.net>\r\n\r\n"
        "This is the mail system. I'm sorry to have to inform you that your message could\r\n"
        "not be delivered to one or more recipients: <gone@customer.example>\r\n"
    ).encode()

    assert bounce_signal(parse_message(raw)) == "detected"  # by our own phrases
    assert not [r for r in caplog.records if r.name.startswith("flufl")]
    assert capfd.readouterr().err == ""


def test_a_dropped_reports_own_report_type_words_are_not_kept_in_its_facts(
    running: Running,
) -> None:
    """The report-type parameter is the sender's to write: only the registered kinds are kept."""
    add_employee(running.runtime.sessions, "alice@example.com")
    canary = f"d{uuid.uuid4().hex}"
    raw = (
        "From: Alice <alice@example.com>\r\nTo: Carol <carol@example.com>\r\n"
        "Subject: tonight\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
        "Message-ID: <report-words@example.com>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=dinner-{canary}; boundary="b1"\r\n'
        "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee you\r\n--b1--\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as client:
        client.sendmail("alice@example.com", [CAPTURE], raw)

    with running.runtime.sessions() as session:
        record = session.scalars(sa.select(DecisionRecord)).one()
    assert (record.outcome, record.facts["report_type"]) == ("drop", "other")
    assert canary.encode() not in everything_stored(running)


def test_a_registered_report_type_is_kept_as_written() -> None:
    from capture.parse import parse_message
    from policies.automated import report_type

    def reported(kind: str) -> str | None:
        raw = f"From: a@b.example\r\nContent-Type: multipart/report; report-type={kind}\r\n\r\n"
        return report_type(parse_message(raw.encode()))

    assert reported("Feedback-Report") == "feedback-report"
    assert reported('"disposition-notification"') == "disposition-notification"
    assert reported("delivery-status") == "delivery-status"
