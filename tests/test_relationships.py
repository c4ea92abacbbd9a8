"""File: employee↔contact relationships, whoever's copy of a message comes first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as policy_smtp
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import review
from app.duplicates import merge
from app.models import Contact, Message, MessageOwner, Relationship
from app.retention import purge_expired_holds
from app.runtime import Runtime, build_runtime
from app.settings import Settings
from capture.pipeline import Envelope
from policies.model import Channel
from tests.conftest import FIXTURES, HOLD_EXTERNAL, add_employee
from tests.mail import CAPTURE, compose

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
FAMILY_WAITS = (
    (FIXTURES / "plumbing-policy.yaml")
    .read_text()
    .replace(
        "rules:\n",
        "rules:\n  - id: family-correspondent\n"
        "    description: Mail with someone of the employee's family name waits for them.\n"
        "    when: shares-family-name\n    outcome: hold\n",
        1,
    )
)


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


def test_the_senders_relationship_counts_when_a_cc_colleagues_copy_came_first(
    runtime: Runtime,
) -> None:
    alice = add_employee(runtime.sessions, "alice@example.com")
    bob = add_employee(runtime.sessions, "bob@example.com")
    quote = compose(to="Jane Doe <jane@acme.example>", headers={"Cc": "Bob <bob@example.com>"})

    imported(runtime, quote, "bob@example.com")  # Bob's inbox synced before Alice's BCC came
    bcc(runtime, quote)
    bcc(runtime, quote)  # a retry, or the same mail by BCC and from her mailbox: counted once

    assert relationships(runtime) == [(alice, "jane@acme.example", 1, 0)]
    assert bob  # Bob neither wrote to Jane nor heard from her


def test_each_employee_the_customer_wrote_to_received_the_mail(runtime: Runtime) -> None:
    alice = add_employee(runtime.sessions, "alice@example.com")
    bob = add_employee(runtime.sessions, "bob@example.com")
    order = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>, Bob <bob@example.com>",
        message_id="<order-9@acme.example>",
    )

    imported(runtime, order, "alice@example.com")
    imported(runtime, order, "bob@example.com")

    assert relationships(runtime) == [
        (alice, "jane@acme.example", 0, 1),
        (bob, "jane@acme.example", 0, 1),
    ]


def test_one_mail_to_two_addresses_of_a_merged_contact_counts_once(runtime: Runtime) -> None:
    alice = add_employee(runtime.sessions, "alice@example.com")
    bcc(runtime, compose(to="Jane Doe <jane@acme.example>", message_id="<m1@example.com>"))
    bcc(runtime, compose(to="Jane Doe <jane.doe@acme.example>", message_id="<m2@example.com>"))
    with runtime.sessions() as session, session.begin():
        ids = {a: i for a, i in session.execute(sa.select(Contact.address, Contact.id))}
        merge(session, ids["jane.doe@acme.example"], ids["jane@acme.example"], NOW)

    both = compose(
        to="Jane Doe <jane@acme.example>",
        headers={"Cc": "Jane Doe <jane.doe@acme.example>"},
        message_id="<m3@example.com>",
    )
    bcc(runtime, both)

    assert relationships(runtime) == [(alice, "jane@acme.example", 3, 0)]


def test_mail_to_two_addresses_merged_later_counts_once_for_the_one_person(
    runtime: Runtime,
) -> None:
    """Each address was a contact of its own when the mail came, and counted it; a merge
    makes them one person, whom the mail reached once."""
    alice = add_employee(runtime.sessions, "alice@example.com")
    both = compose(
        to="Jane Doe <jane@acme.example>",
        headers={"Cc": "Jane Doe <jane.doe@acme.example>"},
        message_id="<m1@example.com>",
    )
    bcc(runtime, both)
    bcc(runtime, compose(to="Jane Doe <jane.doe@acme.example>", message_id="<m2@example.com>"))
    with runtime.sessions() as session, session.begin():
        ids = {a: i for a, i in session.execute(sa.select(Contact.address, Contact.id))}
        merge(session, ids["jane.doe@acme.example"], ids["jane@acme.example"], NOW)

    assert relationships(runtime) == [(alice, "jane@acme.example", 2, 0)]


def test_a_reply_forwarded_as_attachment_and_synced_from_the_inbox_is_one_exchange(
    runtime: Runtime,
) -> None:
    alice = add_employee(runtime.sessions, "alice@example.com")
    bcc(runtime, compose(to="Jane Doe <jane@acme.example>"))  # <quote-1@example.com>
    reply = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>",
        subject="Re: Quote for 20 licences",
        body="Accepted.\n",
        message_id="<reply-1@acme.example>",
        headers={"In-Reply-To": "<quote-1@example.com>", "References": "<quote-1@example.com>"},
    )
    forward = compose(to=CAPTURE, subject="Fwd: Re: Quote", body="FYI\n", message_id="<f@x>")
    forward.add_attachment(reply)

    imported(runtime, reply, "alice@example.com")
    bcc(runtime, forward)

    with runtime.sessions() as session:
        threads = session.scalars(sa.select(Message.thread_id)).all()
    assert len(threads) == 2 and len(set(threads)) == 1  # the quote, and the one reply
    assert relationships(runtime) == [(alice, "jane@acme.example", 1, 1)]


def test_a_copy_kept_for_one_employee_is_not_held_with_a_colleagues_copy(
    settings: Settings, tmp_path: Path
) -> None:
    """Jane Doe shares Alice Doe's family name: the policy holds Alice's copy for her review
    and keeps Bob's. Bob's joined Alice's held message: he had no relationship with Jane,
    and his mail went with Alice's when its review period passed."""
    policy = tmp_path / "family.yaml"
    policy.write_text(FAMILY_WAITS)
    runtime = build_runtime(settings.model_copy(update={"policy": policy}))
    try:
        add_employee(runtime.sessions, "alice@example.com", name="Alice Doe")
        bob = add_employee(runtime.sessions, "bob@example.com", name="Bob Jones")
        order = compose(
            sender="Jane Doe <jane@acme.example>",
            to="Alice Doe <alice@example.com>, Bob Jones <bob@example.com>",
            message_id="<order-7@acme.example>",
        )
        imported(runtime, order, "alice@example.com")
        imported(runtime, order, "bob@example.com")
        with runtime.sessions() as session, session.begin():
            purge_expired_holds(session, datetime.now(UTC) + timedelta(days=365))

        assert relationships(runtime) == [(bob, "jane@acme.example", 0, 1)]
        with runtime.sessions() as session:
            kept = session.execute(
                sa.select(Message.outcome, MessageOwner.employee_id).join(
                    MessageOwner, MessageOwner.message_id == Message.id
                )
            ).all()
        assert kept == [("capture", bob)]
    finally:
        runtime.close()


def test_a_merge_discounts_only_mail_the_employee_kept(settings: Settings, tmp_path: Path) -> None:
    """Bob's mail to both of Jane's addresses, held for Bob and for Alice: Alice kept it,
    Bob's copy still waits for him and counted nothing. A merge took it off Bob's count as
    mail counted twice (the message was a capture), and his one kept mail to Jane read 0."""
    policy = tmp_path / "hold.yaml"
    policy.write_text(HOLD_EXTERNAL)
    runtime = build_runtime(settings.model_copy(update={"policy": policy}))
    try:
        alice = add_employee(runtime.sessions, "alice@example.com")
        bob = add_employee(runtime.sessions, "bob@example.com")
        for n, submitters in ((1, [bob]), (2, [bob, alice])):
            mail = compose(
                sender="Bob <bob@example.com>",
                to="Jane Doe <jane@acme.example>",
                headers={"Cc": "Jane Doe <jane.doe@acme.example>"},
                message_id=f"<both-{n}@example.com>",
            )
            for who in submitters:
                bcc(runtime, mail, "bob@example.com" if who == bob else "alice@example.com")
            with runtime.sessions() as session, session.begin():
                held = session.scalars(
                    sa.select(Message).where(Message.message_id == f"<both-{n}@example.com>")
                ).one()
                review.capture(session, held, review.reviewer(runtime, submitters[-1]))
        assert relationships(runtime) == [
            (bob, "jane@acme.example", 1, 0),
            (bob, "jane.doe@acme.example", 1, 0),
        ]

        with runtime.sessions() as session, session.begin():
            ids = {a: i for a, i in session.execute(sa.select(Contact.address, Contact.id))}
            merge(session, ids["jane.doe@acme.example"], ids["jane@acme.example"], NOW)

        assert relationships(runtime) == [(bob, "jane@acme.example", 1, 0)]
    finally:
        runtime.close()
