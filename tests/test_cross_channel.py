"""One message, however it arrives: BCC'd by its sender and read from their Sent folder."""

from __future__ import annotations

from email import policy

import sqlalchemy as sa

from app.models import Message, MessageOwner
from tests.conftest import Running, add_employee
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
