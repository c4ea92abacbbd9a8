"""File: employee↔contact relationships, whoever's copy of a message comes first."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP as policy_smtp

import pytest
import sqlalchemy as sa

from app.models import Contact, Message, Relationship
from app.runtime import Runtime, build_runtime
from app.settings import Settings
from capture.pipeline import Envelope
from policies.model import Channel
from tests.conftest import add_employee
from tests.mail import CAPTURE, compose


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """The pipeline without its listeners: these tests hand it mail as BCC or import would."""
    built = build_runtime(settings)
    try:
        yield built
    finally:
        built.close()


def bcc(runtime: Runtime, msg: EmailMessage, sender: str = "alice@example.com") -> None:
    envelope = Envelope(mail_from=sender, rcpt_tos=(CAPTURE,))
    runtime.pipeline.process(msg.as_bytes(policy=policy_smtp), envelope, Channel.BCC)


def imported(runtime: Runtime, msg: EmailMessage, owner: str) -> None:
    envelope = Envelope(mail_from=owner)
    runtime.pipeline.process(msg.as_bytes(policy=policy_smtp), envelope, Channel.IMPORT)


def relationships(runtime: Runtime) -> list[tuple[int, str, int, int]]:
    """(employee, contact address, sent, received) of each relationship."""
    with runtime.sessions() as session:
        found = session.execute(
            sa.select(Relationship, Contact.address)
            .join(Contact, Contact.id == Relationship.contact_id)
            .order_by(Relationship.id)
        )
        return [(r.employee_id, a, r.sent_count, r.received_count) for r, a in found]


def test_mail_from_the_employees_address_in_capitals_is_outbound_and_counts_as_sent(
    runtime: Runtime,
) -> None:
    alice = add_employee(runtime.sessions, "alice@example.com")

    bcc(runtime, compose(sender="Alice Example <Alice@Example.com>"))  # as Outlook writes it

    with runtime.sessions() as session:
        assert session.scalars(sa.select(Message.direction)).all() == ["outbound"]
    assert relationships(runtime) == [(alice, "bob@customer.example", 1, 0)]
