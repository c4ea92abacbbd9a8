"""One message, however it arrives: BCC'd by its sender and read from their Sent folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path

import sqlalchemy as sa

from app.models import (
    Attachment,
    Contact,
    DecisionRecord,
    Message,
    MessageOwner,
    Relationship,
)
from app.security import Role
from app.settings import Settings
from tests.conftest import CAPTURE, FIXTURES, Running, add_employee, issue_token, run_service
from tests.dovecot import Dovecot
from tests.mail import compose, send
from tests.test_imap import ALICE, new_mailbox, sync


def test_a_message_bccd_and_synced_from_the_sent_folder_is_one_message(
    running: Running, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(running.runtime.sessions, ALICE)
    quote = compose(to="Bob <bob@customer.example>", message_id="<quote-77@example.com>")
    assert send(running.smtp_port, quote)[0] == 250
    dovecot.append(imap_user, "Sent", [quote.as_bytes(policy=policy.SMTP)])
    mailbox = new_mailbox(running.runtime, dovecot, imap_user, ["Sent"])

    sync(running.runtime, mailbox)

    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
        owners = session.scalars(sa.select(MessageOwner.channel)).all()
    assert owners == ["bcc"]  # Alice's own copy, filed once, first by BCC


# Mail read from a mailbox keeps who and when only (decided on its headers); a capture sent
# in keeps its text, for its owners alone.
METADATA_FROM_MAILBOXES = (
    (FIXTURES / "plumbing-policy.yaml")
    .read_text()
    .replace(
        "rules:\n",
        "rules:\n  - id: mailbox-copies\n    description: Mail read from a mailbox keeps who"
        " and when.\n    when: {channel-in: {channels: [imap]}}\n    outcome: metadata_only\n",
        1,
    )
    .replace("    outcome: capture", "    outcome: capture\n    visibility: private")
)
SIGNED = "Here is our order.\n\nBest regards,\nJane Doe\nHead of Procurement\nAcme Widgets\n"


def _janes_order() -> EmailMessage:
    order = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>, Bob <bob@example.com>",
        subject="Order 1234",
        body=SIGNED,
        message_id="<order-1234@acme.example>",
    )
    order.add_attachment(b"%PDF-1.4 order", maintype="application", subtype="pdf", filename="o.pdf")
    return order


@contextmanager
def _kept_as_metadata_then_forwarded(
    settings: Settings,
    tmp_path: Path,
    dovecot: Dovecot,
    imap_user: str,
    *,
    reader: str,
    mailbox_outcome: str = "metadata_only",
) -> Iterator[tuple[Running, dict[str, str]]]:
    """Jane's order read from `reader`'s INBOX (kept as metadata, or as `mailbox_outcome`
    says), then forwarded by Alice as an attachment (a capture); with each employee's token."""
    rules = tmp_path / "metadata-from-mailboxes.yaml"
    rules.write_text(
        METADATA_FROM_MAILBOXES.replace(
            "    outcome: metadata_only\n", f"    outcome: {mailbox_outcome}\n", 1
        )
    )
    with run_service(settings.model_copy(update={"policy": rules})) as running:
        sessions = running.runtime.sessions
        tokens = {
            email: issue_token(sessions, Role.EMPLOYEE, employee_id=add_employee(sessions, email))
            for email in (ALICE, "bob@example.com", "carol@example.com")
        }
        dovecot.append(imap_user, "INBOX", [_janes_order().as_bytes(policy=policy.SMTP)])
        sync(
            running.runtime,
            new_mailbox(running.runtime, dovecot, imap_user, ["INBOX"], employee=reader),
        )
        forward = compose(to=CAPTURE, subject="Fwd: Order 1234", body="For the CRM.\n")
        forward.add_attachment(_janes_order())
        assert send(running.smtp_port, forward)[0] == 250
        yield running, tokens


def test_a_capture_joining_ones_own_copy_kept_as_metadata_keeps_its_text(
    settings: Settings, tmp_path: Path, dovecot: Dovecot, imap_user: str
) -> None:
    """Alice's mailbox copy was kept as metadata; her forward of the same mail joined it,
    and its subject, text, attachment and signature were never stored: her capture showed
    no text. It now completes the message as a first capture would."""
    with _kept_as_metadata_then_forwarded(settings, tmp_path, dovecot, imap_user, reader=ALICE) as (
        running,
        tokens,
    ):
        with running.client(tokens[ALICE]) as api:
            (seen,) = api.get("/api/v1/messages").json()["items"]
        with running.runtime.sessions() as session:
            attachments = session.scalars(sa.select(Attachment.content_type)).all()
            jane = session.scalars(sa.select(Contact)).one()
    assert (seen["outcome"], seen["subject"], seen["body_text"]) == (
        "capture",
        "Order 1234",
        SIGNED,
    )
    assert [o["channel"] for o in seen["owners"]] == ["imap"]  # one copy: hers
    assert (attachments, jane.title) == (["message/rfc822"], "Head of Procurement")


def test_a_capture_of_mail_waiting_for_my_own_review_files_it_with_its_text(
    settings: Settings, tmp_path: Path, dovecot: Dovecot, imap_user: str
) -> None:
    """Alice's mailbox copy waited for her review (held with no text, as mailbox copies
    wait); her forward of the same mail, a capture, joined it and changed nothing: the
    message stayed held and textless, her capture lost. Had the forward come first, the
    mail was a capture: it is now in either order, filed with its people and counted once,
    and explained by the capture's decision, not the hold's."""
    with _kept_as_metadata_then_forwarded(
        settings, tmp_path, dovecot, imap_user, reader=ALICE, mailbox_outcome="hold"
    ) as (running, tokens):
        with running.client(tokens[ALICE]) as api:
            (seen,) = api.get("/api/v1/messages").json()["items"]
            queue = api.get("/api/v1/review").json()["items"]
        with running.runtime.sessions() as session:
            decisions = session.execute(
                sa.select(DecisionRecord.id, DecisionRecord.outcome).order_by(DecisionRecord.id)
            ).all()
            jane = session.scalars(sa.select(Contact)).one()
            counts = session.execute(sa.select(Relationship.received_count)).scalars().all()
            copies = session.execute(sa.select(MessageOwner.outcome, MessageOwner.held_until)).all()
    assert (seen["outcome"], seen["subject"], seen["body_text"]) == (
        "capture",
        "Order 1234",
        SIGNED,
    )
    assert queue == []
    assert (jane.address, jane.title, counts) == ("jane@acme.example", "Head of Procurement", [1])
    assert [tuple(c) for c in copies] == [("capture", None)]
    assert [d.outcome for d in decisions] == ["hold", "capture"]
    assert seen["decision_id"] == decisions[1].id  # the forward's


def test_a_colleagues_capture_joining_my_copy_kept_as_metadata_shows_me_what_colleagues_see(
    settings: Settings, tmp_path: Path, dovecot: Dovecot, imap_user: str
) -> None:
    """Bob's copy matched the capture's headers, which proves nothing about its text:
    Alice's private capture is hers, and Bob sees of it what any colleague may."""
    with _kept_as_metadata_then_forwarded(
        settings, tmp_path, dovecot, imap_user, reader="bob@example.com"
    ) as (running, tokens):
        with running.client(tokens[ALICE]) as api:
            (alices,) = api.get("/api/v1/messages").json()["items"]
        with running.client(tokens["bob@example.com"]) as api:
            bobs = api.get(f"/api/v1/messages/{alices['id']}").json()
        with running.client(tokens["carol@example.com"]) as api:
            carols = api.get(f"/api/v1/messages/{alices['id']}")
    assert (alices["outcome"], alices["visibility"], alices["body_text"]) == (
        "capture",
        "private",
        SIGNED,
    )
    assert (bobs["outcome"], bobs["subject"], bobs["body_text"]) == ("metadata_only", None, None)
    assert carols.status_code == 404
