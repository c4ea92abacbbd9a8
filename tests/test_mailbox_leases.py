"""Scale-out: on PostgreSQL each mailbox is synced by one process at a time, and a mailbox
whose holder is gone moves to another process."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest

from app import mailboxes
from app.jobs import exclusively
from app.models import Message
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import add_employee, run_service
from tests.dovecot import Dovecot
from tests.test_imap import ALICE, business, count, new_mailbox, runtime, wait_for
from tests.test_mailbox_cli import _mailroom

__all__ = ["runtime"]  # the fixture, imported for these tests


def test_a_mailbox_leased_elsewhere_waits_and_then_moves_here(
    runtime: Runtime,
    settings: Settings,
    dovecot: Dovecot,
    imap_user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if runtime.db.dialect.name != "postgresql":
        pytest.skip("leases are for processes sharing PostgreSQL; SQLite serves one process")
    monkeypatch.setattr(mailboxes, "LEASE_RETRY_SECONDS", 0.5)
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    with ExitStack() as elsewhere:  # another process's lease, taken before the service starts
        assert elsewhere.enter_context(exclusively(runtime.db, f"mailbox-{mailbox_id}"))
        with run_service(settings):
            time.sleep(3)  # six lease attempts
            assert count(runtime, Message) == 0
            elsewhere.close()  # the holder is gone: the lease moves here
            wait_for(lambda: count(runtime, Message) == 1)


def test_mailboxes_sync_leaves_a_mailbox_another_process_is_syncing(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    """`mailroom mailboxes sync ID` while `mailroom serve` follows the mailbox would make two
    processes sync it: counters counted twice, positions moved back, refusals recorded
    twice. It says who has it and reads nothing."""
    if runtime.db.dialect.name != "postgresql":
        pytest.skip("leases are for processes sharing PostgreSQL; SQLite serves one process")
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    with exclusively(runtime.db, f"mailbox-{mailbox_id}"):  # `serve`, elsewhere
        done = _mailroom(settings, "mailboxes", "sync", str(mailbox_id))

    assert done.returncode == 1
    assert "another process is syncing it" in done.stderr, done.stderr
    assert count(runtime, Message) == 0
