"""The admin's mailboxes and a contact's freshness over plain HTTP against the real service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.db import transaction
from app.mailboxes import add_mailbox, record_error
from app.models import Contact, Mailbox, Message
from app.security import Role
from capture.pipeline import Envelope
from policies.model import Channel
from tests.conftest import Running, add_employee
from tests.mail import compose
from tests.test_contacts_filing import INBOX, SIGNED, dsn
from tests.web import csrf_of, sign_in

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


def test_an_admin_pauses_and_removes_a_mailbox_from_the_admin_page(
    running_unsynced: Running,
) -> None:
    admin = add_employee(running_unsynced.runtime.sessions, "carol@example.com")
    alice = add_employee(running_unsynced.runtime.sessions, "alice@example.com")
    box = _mailbox(running_unsynced, employee="alice@example.com", username="alice.imap")
    with sign_in(running_unsynced, alice) as employee:
        refused = employee.post(
            f"/admin/mailboxes/{box}/remove", data={"csrf": csrf_of(employee.get("/mail"))}
        )
    with sign_in(running_unsynced, admin, Role.ADMIN) as client:
        page = client.get("/admin")
        paused = client.post(f"/admin/mailboxes/{box}/pause", data={"csrf": csrf_of(page)})
        resume_button = f'aria-label="Resume mailbox {box}"' in client.get("/admin").text
        forged = client.post(f"/admin/mailboxes/{box}/remove", data={"csrf": "x"})
        removed = client.post(f"/admin/mailboxes/{box}/remove", data={"csrf": csrf_of(page)})
        after = client.get("/admin?note=mailbox-removed").text
        again = client.post(f"/admin/mailboxes/{box}/remove", data={"csrf": csrf_of(page)})

    assert f'aria-label="Remove mailbox {box}"' in page.text
    assert f'aria-label="Pause mailbox {box}"' in page.text
    assert paused.status_code == 303 and resume_button
    assert refused.status_code == 403 and forged.status_code == 403
    assert removed.status_code == 303 and again.status_code == 404
    assert "Mailbox removed" in after and "alice.imap" not in after
    with running_unsynced.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Mailbox)) == 0


def test_an_admin_sees_each_mailboxs_sync_state_but_never_its_password(
    running_unsynced: Running,
) -> None:
    admin = add_employee(running_unsynced.runtime.sessions, "carol@example.com")
    add_employee(running_unsynced.runtime.sessions, "alice@example.com")
    synced_at = datetime.now(UTC) - timedelta(days=3, minutes=5)
    with sign_in(running_unsynced, admin, Role.ADMIN) as client:
        empty = client.get("/admin").text
        alices = _mailbox(running_unsynced, employee="alice@example.com", username="alice.imap")
        journal = _mailbox(running_unsynced, employee=None, username="journal.imap")
        with transaction(running_unsynced.runtime.sessions) as session:
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
        record_error(running_unsynced.runtime.sessions, journal, ConnectionRefusedError("refused"))
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


def _signed(title: str, *, date: str, message_id: str) -> bytes:
    msg = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>",
        body=SIGNED.replace("Head of Procurement", title),
        message_id=message_id,
    )
    msg.replace_header("Date", date)
    return msg.as_bytes()


def test_a_contact_page_shows_title_history_linking_only_messages_i_may_see(
    running: Running,
) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    carol = add_employee(running.runtime.sessions, "carol@example.com")
    pipeline = running.runtime.pipeline
    first, newer = (  # as Alice's mailbox sync brings them in
        pipeline.process(_signed(title, date=date, message_id=mid), INBOX, Channel.IMPORT)
        for title, date, mid in (
            ("Head of Procurement", "Mon, 02 Nov 2026 09:00:00 +0000", "<sig-1@acme.example>"),
            ("Chief Operating Officer", "Tue, 24 Nov 2026 09:00:00 +0000", "<sig-2@acme.example>"),
        )
    )
    assert first.message_id is not None and newer.message_id is not None
    with transaction(running.runtime.sessions) as session:
        session.execute(
            sa.update(Message).where(Message.id == newer.message_id).values(visibility="private")
        )
        jane = session.scalar(sa.select(Contact.id).where(Contact.address == "jane@acme.example"))
    with sign_in(running, carol) as colleague:
        carols = colleague.get(f"/contacts/{jane}").text
    with sign_in(running, alice) as owner:
        alices = owner.get(f"/contacts/{jane}").text

    assert "Freshness" in carols and "Chief Operating Officer" in carols
    history = carols.split('id="history-h"')[1]
    rows = history.split("<tbody>")[1].split("</tbody>")[0].split("</tr>")
    newest, oldest = (r for r in rows if "<td>title</td>" in r)
    assert any("<td>phone</td>" in r for r in rows) and any(
        "<td>organization</td>" in r for r in rows
    )
    assert "2026-11-24" in newest and "Head of Procurement</td><td>Chief Operating" in newest
    assert "2026-11-02" in oldest and "</td><td></td><td>Head of Procurement" in oldest
    assert f'href="/mail/messages/{first.message_id}"' in oldest
    assert f'href="/mail/messages/{newer.message_id}"' not in carols  # Alice's private mail
    assert f'href="/mail/messages/{newer.message_id}"' in alices
    assert "2026-11-24" in carols.split("Signature last read")[1][:40]
    assert "undeliverable" not in carols.lower()


def test_a_bounced_contact_shows_undeliverable_since_the_bounce(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    pipeline = running.runtime.pipeline
    sent = compose(to="Bob <bob@customer.example>")
    pipeline.process(sent.as_bytes(), Envelope("alice@example.com"), Channel.BCC)
    pipeline.process(dsn(failed="bob@customer.example"), INBOX, Channel.IMPORT)
    with running.runtime.sessions() as session:
        bob = session.scalar(sa.select(Contact.id).where(Contact.address == "bob@customer.example"))
    with sign_in(running, alice) as client:
        shown = client.get(f"/contacts/{bob}").text

    assert "Undeliverable since 2026-11-24" in shown
    history = shown.split('id="history-h"')[1]
    assert "deliverability" in history and "undeliverable" in history
