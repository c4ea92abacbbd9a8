"""Promise 2 under fire: kill -9 the listener, or its writer process, mid-load; every 250 is
stored exactly once."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email import policy
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import Message, MessageOwner, Receipt
from app.settings import Settings
from tests.conftest import TEST_SECRET, add_employee
from tests.mail import CAPTURE, compose

SESSIONS = 10
PER_SESSION = 200
KILLS = 3
DEADLINE = 120.0  # seconds; the load stops by itself


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`mailroom serve` as a real process that can be killed and started again."""

    def __init__(
        self,
        settings: Settings,
        port: int,
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log  # where its stderr goes (appended), else nowhere
        self.env = (
            {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
            | {
                "MAILROOM_DATA_DIR": str(settings.data_dir),
                "MAILROOM_DATABASE_URL": settings.resolved_database_url,
                "MAILROOM_SECRET_KEY": TEST_SECRET,
                "MAILROOM_POLICY": str(settings.policy),
                "MAILROOM_SMTP_PORT": str(port),
                "MAILROOM_API_PORT": "0",
            }
            | (env or {})
        )
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *roles: str) -> None:
        with (self.log or Path(os.devnull)).open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", *roles],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        until = time.monotonic() + 30
        while time.monotonic() < until:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mailroom serve did not start listening")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def writers(self) -> list[int]:
        """The pids of the listener's writer processes (app/ingest.py)."""
        assert self.proc is not None
        tasks = Path(f"/proc/{self.proc.pid}/task")
        return [
            int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()
        ]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


def _deliver(port: int, raw: bytes, stop_at: float) -> bool:
    """Send like an MTA: retry on connection loss or 4xx until a 250 (True) or a 5xx."""
    while time.monotonic() < stop_at:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("alice@example.com", [CAPTURE], raw)
            return True
        except smtplib.SMTPResponseException as error:
            if error.smtp_code >= 500:
                return False
        except (OSError, smtplib.SMTPException):
            pass
        time.sleep(0.05)
    return False


def _sender(port: int, worker: int, accepted: list[str], stop_at: float) -> None:
    for n in range(PER_SESSION):
        mid = f"<load-{worker}-{n}@example.com>"
        raw = compose(subject=f"Order {worker}/{n}", message_id=mid).as_bytes(policy=policy.SMTP)
        if _deliver(port, raw, stop_at):
            accepted.append(mid)


def test_kill_9_under_load_loses_and_duplicates_nothing_that_got_250(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    add_employee(sessions, "alice@example.com")
    server = Server(settings, free_port())
    server.start()
    accepted: list[str] = []
    stop_at = time.monotonic() + DEADLINE
    senders = [
        threading.Thread(target=_sender, args=(server.port, w, accepted, stop_at))
        for w in range(SESSIONS)
    ]
    for thread in senders:
        thread.start()
    orphans: list[int] = []
    try:
        for _ in range(KILLS):
            time.sleep(1.0)
            # The writer process alone: the listener answers 451 and starts another.
            killed = server.writers()
            for writer in killed:
                os.kill(writer, signal.SIGKILL)
            # The listener, once its new writer is up: the writer finishes the batch in hand
            # and exits.
            until = time.monotonic() + 30
            while not set(server.writers()) - set(killed) and time.monotonic() < until:
                time.sleep(0.1)
            time.sleep(1.0)
            orphans += set(server.writers()) - set(killed)
            server.kill()
            server.start()
        for thread in senders:
            thread.join(timeout=DEADLINE)
    finally:
        server.stop()
    time.sleep(1.0)
    left = [pid for pid in orphans if Path(f"/proc/{pid}").exists()]

    with sessions() as session:
        stored = [str(m) for m in session.scalars(sa.select(Message.message_id))]
        owners = session.scalar(sa.select(sa.func.count()).select_from(MessageOwner))
        receipts = session.scalar(sa.select(sa.func.count()).select_from(Receipt))
    assert len(accepted) == SESSIONS * PER_SESSION, "every message is eventually accepted"
    assert sorted(stored) == sorted(accepted), "each accepted message is stored exactly once"
    assert owners == receipts == len(stored)
    assert orphans and not left, "a writer process exits when its listener dies"
