"""Scale-out: two `mailroom serve` processes on one PostgreSQL, kill -9 one under load; every
message that got a 250 is stored exactly once and the decision log stays one chain."""

from __future__ import annotations

import smtplib
import threading
import time
from email import policy

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app import ledger
from app.models import Message, MessageOwner, Receipt
from app.settings import Settings
from tests.conftest import add_employee, server_url
from tests.mail import CAPTURE, compose
from tests.test_crash_safety import Server, free_port

SESSIONS = 8
PER_SESSION = 50  # 400 messages in all
KILL_AFTER = 100  # accepted messages before one process is killed
DEADLINE = 120.0  # seconds; the load stops by itself

pytestmark = pytest.mark.skipif(
    server_url() is None, reason="several processes share PostgreSQL (MAILROOM_TEST_DATABASE_URL)"
)


def _deliver(ports: list[int], first: int, raw: bytes, stop_at: float) -> bool:
    """Send like an MTA with two MX hosts: on connection loss or 4xx, retry at the next one,
    until a 250 (True) or a 5xx."""
    attempt = first
    while time.monotonic() < stop_at:
        try:
            with smtplib.SMTP("127.0.0.1", ports[attempt % len(ports)], timeout=10) as client:
                client.sendmail("alice@example.com", [CAPTURE], raw)
            return True
        except smtplib.SMTPResponseException as error:
            if error.smtp_code >= 500:
                return False
        except (OSError, smtplib.SMTPException):
            pass
        attempt += 1
        time.sleep(0.05)
    return False


def _sender(ports: list[int], worker: int, accepted: list[str], stop_at: float) -> None:
    for n in range(PER_SESSION):
        mid = f"<scale-{worker}-{n}@example.com>"
        raw = compose(subject=f"Order {worker}/{n}", message_id=mid).as_bytes(policy=policy.SMTP)
        if _deliver(ports, worker, raw, stop_at):
            accepted.append(mid)


def test_two_processes_one_killed_under_load_lose_and_duplicate_nothing_that_got_250(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    add_employee(sessions, "alice@example.com")
    servers = [Server(settings, free_port()), Server(settings, free_port())]
    servers[0].start()
    servers[1].start("--smtp")  # a listener-only process: the roles change nothing for mail
    ports = [server.port for server in servers]
    accepted: list[str] = []
    stop_at = time.monotonic() + DEADLINE
    senders = [
        threading.Thread(target=_sender, args=(ports, w, accepted, stop_at))
        for w in range(SESSIONS)
    ]
    for thread in senders:
        thread.start()
    try:
        while len(accepted) < KILL_AFTER and time.monotonic() < stop_at:
            time.sleep(0.01)
        servers[0].kill()  # mid-run: the senders retry what got no 250 at the other process
        killed_at = len(accepted)
        for thread in senders:
            thread.join(timeout=DEADLINE)
    finally:
        for server in servers:
            server.stop()

    with sessions() as session:
        stored = [str(m) for m in session.scalars(sa.select(Message.message_id))]
        owners = session.scalar(sa.select(sa.func.count()).select_from(MessageOwner))
        receipts = session.scalar(sa.select(sa.func.count()).select_from(Receipt))
        chain = ledger.verify(session)
    assert KILL_AFTER <= killed_at < SESSIONS * PER_SESSION, "the kill came mid-run"
    assert len(accepted) == SESSIONS * PER_SESSION, "every message is eventually accepted"
    assert sorted(stored) == sorted(accepted), "each accepted message is stored exactly once"
    assert owners == receipts == len(stored)
    assert chain.ok and chain.checked >= len(stored)
