"""The admin's mailboxes and a contact's freshness over plain HTTP against the real service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.db import transaction
from app.mailboxes import add_mailbox, record_error
from app.models import Mailbox
from app.security import Role
from tests.conftest import Running, add_employee
from tests.web import sign_in

PASSWORD = "IMAP-PASSWORD-CANARY-7f3a"


def _mailbox(running: Running, *, employee: str | None, username: str) -> int:
    with transaction(running.runtime.sessions) as session:
        return add_mailbox(
            session,
            running.runtime.pipeline.secret,
            employee=employee,
            host="imap.example.com",
            port=993,
            username=username,
            password=PASSWORD,
            folders=["INBOX", "Sent"],
            tls="tls",
        ).id


def test_an_admin_sees_each_mailboxs_sync_state_but_never_its_password(running: Running) -> None:
    admin = add_employee(running.runtime.sessions, "carol@example.com")
    add_employee(running.runtime.sessions, "alice@example.com")
    synced_at = datetime.now(UTC) - timedelta(days=3, minutes=5)
    with sign_in(running, admin, Role.ADMIN) as client:
        empty = client.get("/admin").text
        alices = _mailbox(running, employee="alice@example.com", username="alice.imap")
        journal = _mailbox(running, employee=None, username="journal.imap")
        with transaction(running.runtime.sessions) as session:
            session.execute(
                sa.update(Mailbox)
                .where(Mailbox.id == alices)
                .values(
                    last_sync_at=synced_at,
                    pending=12,
                    synced=340,
                    bodies_fetched=300,
                    bodies_skipped=40,
                )
            )
            sealed = session.scalars(sa.select(Mailbox.password_sealed)).all()
        record_error(running.runtime.sessions, journal, ConnectionRefusedError("refused"))
        shown = client.get("/admin").text

    assert "No mailboxes yet." in empty and "mailroom mailboxes add" in empty
    alices_box = shown.split(f'id="mailbox-{alices}"')[1].split("</article>")[0]
    journal_box = shown.split(f'id="mailbox-{journal}"')[1].split("</article>")[0]
    for expected in ("alice@example.com: alice.imap at imap.example.com:993", "INBOX, Sent"):
        assert expected in alices_box
    when = synced_at.strftime("%Y-%m-%d %H:%M")
    for expected in (when, "(3 days ago)", "12 on the server", ">340<", "300 fetched, 40 skipped"):
        assert expected in alices_box
    assert "Journal: journal.imap" in journal_box and "never" in journal_box
    assert "<dd>none</dd>" in alices_box.split("Last error")[1]
    assert "ConnectionRefusedError: refused" in journal_box
    assert "No mailboxes yet." not in shown
    assert PASSWORD not in shown and len(sealed) == 2
    assert not any(s in shown for s in sealed)
