"""File: people and companies from captured mail, their history, duplicates, bounces."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from email.policy import SMTP as policy_smtp
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.filing import _get_or_create
from app.models import (
    Attachment,
    Company,
    Contact,
    ContactChange,
    DecisionRecord,
    MessageOwner,
    Participant,
    Relationship,
    Suppression,
)
from app.runtime import build_runtime
from app.security import Role
from app.settings import Settings
from capture.parse import parse_message
from capture.pipeline import Envelope, Result
from capture.writer import Submission, commit_batch
from policies.model import Channel
from policies.observe import address_token
from tests.conftest import (
    FIXTURES,
    Running,
    add_employee,
    everything_stored,
    issue_token,
    run_service,
)
from tests.mail import CAPTURE, compose, send

INBOX = Envelope(mail_from="alice@example.com")  # what IMAP sync and import say of Alice's mail
SIGNED = """Hello Alice,

we accept the quote for the twenty licences.

Best regards,

Jane Doe
Head of Procurement
Acme Widgets Ltd
Tel: +44 20 7946 0958
"""


def contacts(running: Running) -> dict[str, Contact]:
    with running.runtime.sessions() as session:
        return {c.address: c for c in session.scalars(sa.select(Contact))}


def test_a_captured_message_files_named_people_with_their_company(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    msg = compose(
        to="Jane Doe <Jane.Doe@Mail.Acme.CO.UK>, Sam Lee <sam.lee@gmail.com>",
        headers={"Cc": "Acme Support <support@acme.co.uk>"},
    )

    assert send(running.smtp_port, msg)[0] == 250

    found = contacts(running)
    assert set(found) == {"Jane.Doe@mail.acme.co.uk", "sam.lee@gmail.com"}
    jane, sam = found["Jane.Doe@mail.acme.co.uk"], found["sam.lee@gmail.com"]
    assert (jane.first_name, jane.last_name) == ("Jane", "Doe")
    assert sam.company_id is None  # free mail is nobody's company
    with running.runtime.sessions() as session:
        company = session.get(Company, jane.company_id)
        assert company is not None and company.domain == "acme.co.uk"
        roles = session.scalars(
            sa.select(Participant.address).where(Participant.contact_id.is_(None))
        ).all()
    assert "support@acme.co.uk" in roles  # kept as an address, never made a person


def test_no_employee_address_or_alias_becomes_a_contact_in_any_case(running: Running) -> None:
    """Aliases on a domain that is not the organization's (a consultancy, a former
    company's) are an employee's too: the submitter's, written in capitals as Outlook
    does, and a colleague's."""
    sessions = running.runtime.sessions
    alice = add_employee(sessions, "alice@example.com", aliases=("alice@alice-co.example",))
    bob = add_employee(sessions, "bob@example.com", aliases=("bob@bob-co.example",))
    mail = compose(
        sender="Alice Smith <Alice@Alice-Co.example>",
        to="Jane Doe <jane@acme.example>",
        headers={"Cc": "Bob Example <bob@bob-co.example>"},
    )

    running.runtime.pipeline.process(
        mail.as_bytes(), Envelope(mail_from="alice@example.com", sent_folder=True), Channel.IMPORT
    )

    assert set(contacts(running)) == {"jane@acme.example"}
    with running.runtime.sessions() as session:
        employees = session.execute(
            sa.select(Participant.address, Participant.employee_id).order_by(Participant.id)
        ).all()
    assert [e for _, e in employees] == [alice, None, bob]


def test_one_address_written_in_two_cases_is_one_contact(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    first = compose(to="Jane Doe <Jane.Doe@acme.example>", message_id="<a1@example.com>")
    again = compose(to="Jane Doe <jane.doe@ACME.example>", message_id="<a2@example.com>")

    for msg in (first, again):
        running.runtime.pipeline.process(
            msg.as_bytes(),
            Envelope(mail_from="alice@example.com", sent_folder=True),
            Channel.IMPORT,
        )

    assert list(contacts(running)) == ["Jane.Doe@acme.example"]  # as first written
    with running.runtime.sessions() as session:
        linked = session.scalars(
            sa.select(Participant.contact_id).where(Participant.role == "to").distinct()
        ).all()
    assert linked == [contacts(running)["Jane.Doe@acme.example"].id]
    with running.runtime.sessions() as session:  # and the policy knows her in either case
        facts = session.scalars(sa.select(DecisionRecord.facts).order_by(DecisionRecord.id))
        assert [f["known_contacts"] for f in facts] == [0, 1]


def test_a_contact_first_seen_without_a_name_is_named_once_by_later_kept_mail(
    running: Running,
) -> None:
    """Not by mail that is dropped (its names are never stored); and a name known, or given
    through the API, is never overwritten."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    sent = Envelope(mail_from="alice@example.com", sent_folder=True)
    bare = compose(to="jane@acme.example, sam@acme.example", message_id="<n1@example.com>")
    private = compose(to="Jane Private <jane@acme.example>", message_id="<n2@example.com>")
    private["Sensitivity"] = "Personal"
    unnamed = compose(to='"jane@acme.example" <jane@acme.example>', message_id="<n5@example.com>")
    named = compose(
        to="Jane Doe <jane@acme.example>, Sam Lee <sam@acme.example>",
        message_id="<n3@example.com>",
    )
    renamed = compose(to="Janet Roe <jane@acme.example>", message_id="<n4@example.com>")

    for msg in (bare, private, unnamed):
        running.runtime.pipeline.process(msg.as_bytes(), sent, Channel.IMPORT)
    assert contacts(running)["jane@acme.example"].name == ""
    with running.client(token) as api:
        sam = contacts(running)["sam@acme.example"].id
        assert api.patch(f"/api/v1/contacts/{sam}", json={"name": "Samuel Lee"}).is_success
    for msg in (named, renamed):
        running.runtime.pipeline.process(msg.as_bytes(), sent, Channel.IMPORT)

    found = contacts(running)
    jane = found["jane@acme.example"]
    assert (jane.name, jane.first_name, jane.last_name) == ("Jane Doe", "Jane", "Doe")
    assert found["sam@acme.example"].name == "Samuel Lee"
    with running.runtime.sessions() as session:
        history = session.execute(
            sa.select(ContactChange.field, ContactChange.old_value, ContactChange.new_value)
        ).all()
    assert history == [("name", "", "Samuel Lee"), ("name", "", "Jane Doe")]  # Sam's: a person's
    assert b"Jane Private" not in everything_stored(running)


def test_a_name_a_person_cleared_through_the_api_stays_empty_whatever_mail_says(
    running: Running,
) -> None:
    """A wrong or private name a correspondent's mail client shows, cleared by a person, is
    not filled again by the next kept mail naming the contact: whether mail named them after
    a bare address (Jane) or when they were first seen (Sam)."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    bare = compose(to="jane@acme.example, Sam Lee <sam@acme.example>", message_id="<c1@x>")
    named = compose(to="Jane Doe <jane@acme.example>", message_id="<c2@x>")
    again = compose(
        to="Jane Doe <jane@acme.example>, Sam Lee <sam@acme.example>", message_id="<c3@x>"
    )

    for msg in (bare, named):
        assert send(running.smtp_port, msg)[0] == 250
    found = contacts(running)
    jane, sam = found["jane@acme.example"], found["sam@acme.example"]
    assert (jane.name, sam.name) == ("Jane Doe", "Sam Lee")
    with running.client(token) as api:
        for contact in (jane, sam):
            assert api.patch(f"/api/v1/contacts/{contact.id}", json={"name": ""}).is_success
    assert send(running.smtp_port, again)[0] == 250
    with running.client(token) as api:
        after = [api.get(f"/api/v1/contacts/{c.id}").json()["name"] for c in (jane, sam)]
        history = api.get(f"/api/v1/contacts/{jane.id}/history").json()

    assert after == ["", ""]
    assert [(h["field"], h["old_value"], h["new_value"]) for h in history] == [
        ("name", "", ""),  # the person's, newest first; the name they emptied is gone
        ("name", "", ""),
    ]


def test_a_name_a_person_emptied_or_replaced_shows_nowhere_about_the_contact(
    running: Running,
) -> None:
    """Not in the first and last name (a guess from first.last@ stays, as for an address
    first seen bare), nor in the history, whether mail named the contact
    after a bare address (Jane) or when first seen (Sam)."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    bare = compose(to="jane.doe@acme.example", message_id="<p1@x>")
    named = compose(
        to="Jane Secretname <jane.doe@acme.example>, Sam Secretname <sam@acme.example>",
        message_id="<p2@x>",
    )
    for msg in (bare, named):
        assert send(running.smtp_port, msg)[0] == 250
    found = contacts(running)
    jane, sam = found["jane.doe@acme.example"], found["sam@acme.example"]

    with running.client(token) as api:
        assert api.patch(f"/api/v1/contacts/{jane.id}", json={"name": ""}).is_success
        assert api.patch(f"/api/v1/contacts/{sam.id}", json={"name": "Samuel Lee"}).is_success
        shown = [api.get(f"/api/v1/contacts/{c.id}").json() for c in (jane, sam)]
        histories = [api.get(f"/api/v1/contacts/{c.id}/history").text for c in (jane, sam)]

    assert [(c["name"], c["first_name"], c["last_name"]) for c in shown] == [
        ("", "Jane", "Doe"),
        ("Samuel Lee", "Samuel", "Lee"),
    ]
    assert all("Secretname" not in history for history in histories)
    assert all('"field":"name"' in history for history in histories)  # changed, and when


def test_an_address_with_a_capital_beyond_ascii_is_one_contact_known_in_any_case(
    running: Running,
) -> None:
    """SQLite's lower() folds A to Z alone: `Émile@` was not even known as itself there,
    and `émile@` became a second contact."""
    add_employee(running.runtime.sessions, "alice@example.com")
    for number, to in enumerate(("Émile@acme.example", "Émile@acme.example", "ÉMILE@acme.example")):
        running.runtime.pipeline.process(
            compose(to=f"Émile Zola <{to}>", message_id=f"<e{number}@example.com>").as_bytes(),
            Envelope(mail_from="alice@example.com", sent_folder=True),
            Channel.IMPORT,
        )

    assert list(contacts(running)) == ["Émile@acme.example"]
    with running.runtime.sessions() as session:
        facts = session.scalars(sa.select(DecisionRecord.facts).order_by(DecisionRecord.id))
        assert [f["known_contacts"] for f in facts] == [0, 1, 1]


def test_contacts_split_by_a_capital_beyond_ascii_are_listed_as_one_person(
    running: Running,
) -> None:
    """As an earlier version split them; new mail files to the older one."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    with running.runtime.sessions() as session, session.begin():
        for address in ("Émile@acme.example", "émile@acme.example"):
            session.add(Contact(address=address, name="Émile Zola"))
    send(running.smtp_port, compose(to="Émile Zola <émile@acme.example>"))

    with running.client(token) as api:
        listed = api.get("/api/v1/contacts/duplicates").json()

    assert [(d["reason"], [c["address"] for c in d["contacts"]]) for d in listed] == [
        ("same-person", ["Émile@acme.example", "émile@acme.example"])
    ]
    with running.runtime.sessions() as session:
        linked = session.scalars(
            sa.select(Contact.address)
            .join(Participant, Participant.contact_id == Contact.id)
            .where(Participant.role == "to")
        ).all()
    assert linked == ["Émile@acme.example"]


def test_a_signature_updates_title_phone_and_organization_with_history(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    first = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>",
        body=SIGNED,
        message_id="<sig-1@acme.example>",
    )
    newer = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>",
        body=SIGNED.replace("Head of Procurement", "Chief Operating Officer"),
        message_id="<sig-2@acme.example>",
    )
    newer.replace_header("Date", "Tue, 24 Nov 2026 09:00:00 +0000")
    older = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>",
        body=SIGNED.replace("Head of Procurement", "Buyer"),
        message_id="<sig-0@acme.example>",
    )
    older.replace_header("Date", "Mon, 02 Nov 2026 09:00:00 +0000")

    for msg in (first, newer, older):  # as mailbox sync or import brings them in
        running.runtime.pipeline.process(msg.as_bytes(), INBOX, Channel.IMPORT)

    jane = contacts(running)["jane@acme.example"]
    assert jane.title == "Chief Operating Officer"
    assert jane.phone.replace(" ", "").endswith("2079460958")
    assert "Acme Widgets" in jane.organization
    with running.runtime.sessions() as session:
        titles = session.scalars(
            sa.select(ContactChange.new_value)
            .where(ContactChange.contact_id == jane.id, ContactChange.field == "title")
            .order_by(ContactChange.id)
        ).all()
    assert titles == ["Head of Procurement", "Chief Operating Officer"]


def test_a_phone_number_written_without_country_code_is_read_by_the_senders_country(
    running: Running,
) -> None:
    """Most of Europe signs with national numbers ("Tel. 030 1234567"): without the region
    that the sender's country domain gives, no such number was ever read."""
    add_employee(running.runtime.sessions, "alice@example.com")
    national = SIGNED.replace("Tel: +44 20 7946 0958", "Tel.: 030 1234567")
    mail = compose(sender="Jane Doe <jane@acme.de>", to="Alice <alice@example.com>", body=national)

    running.runtime.pipeline.process(mail.as_bytes(), INBOX, Channel.IMPORT)

    assert contacts(running)["jane@acme.de"].phone == "+49301234567"


def test_only_the_senders_own_signature_updates_their_contact(running: Running) -> None:
    """An assistant signing for Bob changes nothing of Bob's; Jane, whose From has no
    display name, is known by the name her address gives."""
    add_employee(running.runtime.sessions, "alice@example.com")
    for_bob = SIGNED.replace("Jane Doe", "Carol Jones").replace("Head of Procurement", "PA")
    mails = [
        compose(sender="Bob Builder <bob@acme.example>", body=for_bob, message_id="<b@acme>"),
        compose(sender="jane.doe@acme.example", body=SIGNED, message_id="<j@acme>"),
    ]

    for msg in mails:
        msg.replace_header("To", "Alice <alice@example.com>")
        running.runtime.pipeline.process(msg.as_bytes(), INBOX, Channel.IMPORT)

    found = contacts(running)
    bob, jane = found["bob@acme.example"], found["jane.doe@acme.example"]
    assert (bob.title, bob.phone) == ("", "")
    assert (jane.title, jane.phone) == ("Head of Procurement", "+442079460958")


def test_same_name_at_a_new_company_is_a_likely_job_move_not_a_merge(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    send(running.smtp_port, compose(to="John Smith <john@acme.example>", message_id="<m1@x>"))
    send(running.smtp_port, compose(to="John Smith <jsmith@globex.example>", message_id="<m2@x>"))

    with running.client(token) as api:
        listed = api.get("/api/v1/contacts/duplicates").json()
        assert [d["reason"] for d in listed] == ["likely-job-move"]
        old, new = (c["id"] for c in listed[0]["contacts"])
        merged = api.post(f"/api/v1/contacts/{old}/merge", json={"into": new})
        history = api.get(f"/api/v1/contacts/{new}/history").json()
        again = api.post(f"/api/v1/contacts/{old}/merge", json={"into": new})
        sneaky = api.post(f"/api/v1/contacts/{new}/merge", json={"into": old, "id": 1})

    assert merged.status_code == 200 and merged.json()["id"] == new
    assert {"merged", "likely-job-move"} <= {h["field"] for h in history}
    assert again.status_code == 409 and sneaky.status_code == 422
    send(running.smtp_port, compose(to="John Smith <john@acme.example>", message_id="<m3@x>"))
    with running.runtime.sessions() as session:
        linked = session.scalars(
            sa.select(Participant.contact_id).where(Participant.address == "john@acme.example")
        ).all()
    assert set(linked) == {new}  # old messages moved, and new mail follows the merge


def test_a_merge_waits_for_mail_being_filed_with_the_address_it_merges(
    running: Running,
) -> None:
    """A batch (the SMTP writer's group commit, a mailbox sync) files in one transaction.
    On PostgreSQL a merge committing meanwhile moved what it saw of the old contact and not
    what the batch filed: the new mail stayed with the merged-away contact, and the batch's
    count was lost when the merge folded the relationship it had just counted."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    for to, mid in (("jane@acme.example", "<m1@x>"), ("jane.doe@acme.example", "<m2@x>")):
        assert send(running.smtp_port, compose(to=f"Jane Doe <{to}>", message_id=mid))[0] == 250
    ids = {address: c.id for address, c in contacts(running).items()}
    answers: list[int] = []

    def request() -> None:
        with running.client(token) as api:
            into = {"into": ids["jane@acme.example"]}
            merged = api.post(f"/api/v1/contacts/{ids['jane.doe@acme.example']}/merge", json=into)
            answers.append(merged.status_code)

    merging = threading.Thread(target=request)
    in_flight = compose(to="Jane Doe <jane.doe@acme.example>", message_id="<m3@x>").as_bytes()
    pipeline = running.runtime.pipeline
    with pipeline.connections().connect() as conn:
        transaction = conn.begin()
        pipeline.process_in(conn, parse_message(in_flight), INBOX, Channel.BCC)
        merging.start()
        merging.join(timeout=1.0)  # the merge is done, or waiting for the batch
        transaction.commit()
    merging.join(timeout=60)

    assert answers == [200]
    with running.runtime.sessions() as session:
        linked = session.scalars(
            sa.select(Participant.contact_id).where(Participant.contact_id.is_not(None)).distinct()
        ).all()
        counted = session.execute(sa.select(Relationship.contact_id, Relationship.sent_count)).all()
    assert linked == [ids["jane@acme.example"]]
    assert counted == [(ids["jane@acme.example"], 3)]


def test_a_name_with_an_accented_capital_at_a_new_company_is_a_likely_job_move(
    running: Running,
) -> None:
    """SQLite's lower() folds ASCII alone: compared with the name lower-cased by Python,
    'Élodie' never matched itself, so no move of hers was ever noted there."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    for to, mid in (
        ("Élodie Œuvray <elodie@acme.example>", "<m1@x>"),
        ("Élodie Œuvray <eoeuvray@globex.example>", "<m2@x>"),
    ):
        assert send(running.smtp_port, compose(to=to, message_id=mid))[0] == 250

    with running.client(token) as api:
        listed = api.get("/api/v1/contacts/duplicates").json()

    assert [d["reason"] for d in listed] == ["likely-job-move"]
    assert [c["address"] for c in listed[0]["contacts"]] == [
        "elodie@acme.example",
        "eoeuvray@globex.example",
    ]


def test_a_team_named_alike_at_two_customers_is_no_job_move(running: Running) -> None:
    """accounts.payable@ and accounts-payable@ are role mailboxes; a team's mailbox that is
    not (ap-team@) still has a team's name, which is no person's."""
    add_employee(running.runtime.sessions, "alice@example.com")
    teams = [
        "Accounts Payable <accounts.payable@acme.example>",
        "Accounts Payable <accounts-payable@globex.example>",
        "Accounts Payable <ap-team@initech.example>",
        "Accounts Payable <payables@umbrella.example>",
    ]
    for number, team in enumerate(teams):
        send(running.smtp_port, compose(to=team, message_id=f"<inv-{number}@example.com>"))

    with running.runtime.sessions() as session:
        moves = session.scalars(
            sa.select(ContactChange.id).where(ContactChange.field == "likely-job-move")
        ).all()
    assert moves == []
    assert set(contacts(running)) == {"ap-team@initech.example", "payables@umbrella.example"}


def test_a_bounce_marks_the_contact_undeliverable_and_creates_no_contact(
    running: Running,
) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    send(running.smtp_port, compose(to="Bob <bob@customer.example>"))

    # Bounces reach an employee's mailbox; IMAP sync and import bring them in.
    running.runtime.pipeline.process(
        dsn(failed="bob@customer.example"),
        INBOX,
        Channel.IMPORT,
    )

    found = contacts(running)
    assert set(found) == {"bob@customer.example"}
    assert found["bob@customer.example"].undeliverable_since == datetime(
        2026, 11, 24, 9, tzinfo=UTC
    )


def test_a_bounce_naming_a_contacts_address_in_another_case_marks_them(
    running: Running,
) -> None:
    """One address in any case is one contact: a report naming it as the MTA wrote it
    (here, lower-cased) is about that contact."""
    add_employee(running.runtime.sessions, "alice@example.com")
    send(running.smtp_port, compose(to="Bob Builder <Bob.Builder@customer.example>"))

    running.runtime.pipeline.process(
        dsn(failed="bob.builder@customer.example"), INBOX, Channel.IMPORT
    )

    found = contacts(running)
    assert set(found) == {"Bob.Builder@customer.example"}
    assert found["Bob.Builder@customer.example"].undeliverable_since == datetime(
        2026, 11, 24, 9, tzinfo=UTC
    )


def test_a_refused_bounce_marks_no_contact_undeliverable(running: Running) -> None:
    """A message refused with 550 (here: its From is no employee's, as a delivery report's
    never is) leaves a decision record and nothing else: whoever sends one in an employee's
    envelope cannot mark the CRM's contacts undeliverable."""
    add_employee(running.runtime.sessions, "alice@example.com")
    send(running.smtp_port, compose(to="Bob <bob@customer.example>"))

    code, reply = send(running.smtp_port, dsn(failed="bob@customer.example"))

    assert (code, reply[:5]) == (550, b"5.7.1")
    assert contacts(running)["bob@customer.example"].undeliverable_since is None
    with running.runtime.sessions() as session:
        assert session.scalars(sa.select(ContactChange.field)).all() == []


def test_attachments_are_recorded_by_name_type_and_size_only(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    msg = compose()
    msg.add_attachment(
        b"%PDF-1.4 quote", maintype="application", subtype="pdf", filename="quote.pdf"
    )

    assert send(running.smtp_port, msg)[0] == 250

    with running.runtime.sessions() as session:
        rows = session.execute(
            sa.select(Attachment.filename, Attachment.content_type, Attachment.size)
        ).all()
    assert rows == [("quote.pdf", "application/pdf", 14)]


def dsn(*, failed: str) -> bytes:
    """An RFC 3464 delivery-status notification about a message Alice sent."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r\n"
        "To: alice@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Tue, 24 Nov 2026 09:00:00 +0000\r\n"
        "Message-ID: <bounce-1@mx.customer.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
        "Your message could not be delivered to one or more recipients.\r\n"
        "\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--b1--\r\n"
    ).encode()


def test_a_forward_as_attachment_files_the_attached_messages_sender(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    original = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>",
        subject="Order 1234",
        message_id="<order-1234@acme.example>",
    )
    forward = compose(to=CAPTURE, subject="Fwd: Order 1234", body="FYI, see attached.\n")
    forward.add_attachment(original)

    assert send(running.smtp_port, forward)[0] == 250

    assert set(contacts(running)) == {"jane@acme.example"}
    with running.runtime.sessions() as session:
        senders = session.scalars(
            sa.select(Participant.address).where(Participant.role == "from")
        ).all()
        channel = session.scalar(sa.select(MessageOwner.channel))
    assert senders == ["jane@acme.example"] and channel == "forward"


KNOWN_FIRST = (
    (FIXTURES / "plumbing-policy.yaml")
    .read_text()
    .replace(
        "rules:\n",
        "rules:\n  - id: known-correspondent\n    description: Mail with a contact is captured.\n"
        "    when: known-contact\n    outcome: capture\n",
        1,
    )
)


def test_no_capture_address_is_a_participant_whichever_way_the_mail_came(
    settings: Settings,
) -> None:
    """Another capture address shown in Cc (on another domain: another SMTP transaction,
    whose copy is a retry of this one), or the capture address in a copy read from the
    employee's Sent folder (no envelope names it): where mail was sent, never a person."""
    crm = "crm@capture.example.net"
    two = settings.model_copy(update={"capture_addresses": [CAPTURE, crm]})
    with run_service(two) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        shown = compose(headers={"Cc": f"CRM <{crm}>"}, message_id="<shown@example.com>")
        sent = compose(headers={"Cc": f"Capture <{CAPTURE}>"}, message_id="<sent@example.com>")

        assert send(running.smtp_port, shown)[0] == 250
        running.runtime.pipeline.process(sent.as_bytes(policy=policy_smtp), INBOX, Channel.IMPORT)

        with running.runtime.sessions() as session:
            participants = set(session.scalars(sa.select(Participant.address)))
        assert set(contacts(running)) == {"bob@customer.example"}
    assert participants == {"alice@example.com", "bob@customer.example"}


def test_a_capture_address_in_an_inline_forwarded_block_is_no_participant(
    settings: Settings,
) -> None:
    """Jane answered all on a message that copied the capture address; Alice forwards her
    answer inline. The forwarded block's Cc names the capture address: where mail was sent,
    not a person, on the capture domain as on any other."""
    crm = "crm@capture.example.net"
    with run_service(settings.model_copy(update={"capture_addresses": [CAPTURE, crm]})) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        block = (
            "From: Jane Doe <jane@acme.example>\nDate: Mon, 5 Jan 2026 09:00:00 +0000\n"
            f"Subject: Re: Order 1234\nTo: Alice <alice@example.com>\nCc: CRM <{crm}>\n"
        )
        body = f"Please file.\n\n---------- Forwarded message ---------\n{block}\nShip it.\n"
        forward = compose(to=CAPTURE, subject="Fwd: Re: Order 1234", body=body)

        assert send(running.smtp_port, forward)[0] == 250

        with running.runtime.sessions() as session:
            participants = set(session.scalars(sa.select(Participant.address)))
        assert set(contacts(running)) == {"jane@acme.example"}
    assert participants == {"alice@example.com", "jane@acme.example"}


def test_a_capture_address_in_reply_to_is_no_participant(running: Running) -> None:
    """Reply-To names participants too; one who asks for replies to go to the capture
    address has not made it a person."""
    add_employee(running.runtime.sessions, "alice@example.com")
    reply_to = f"Alice <alice@example.com>, CRM <{CAPTURE}>"

    assert send(running.smtp_port, compose(headers={"Reply-To": reply_to}))[0] == 250

    with running.runtime.sessions() as session:
        participants = set(session.scalars(sa.select(Participant.address)))
    assert participants == {"alice@example.com", "bob@customer.example"}


def test_one_batch_sees_the_contacts_and_erasures_its_own_messages_and_others_made(
    settings: Settings, tmp_path: Path
) -> None:
    """A batch asks about all its participants at once; a contact filed by an earlier
    message of the batch is still known to a later one, and an erasure stops its mail."""
    policy = tmp_path / "known-first.yaml"
    policy.write_text(KNOWN_FIRST)
    runtime = build_runtime(settings.model_copy(update={"policy": policy}))
    try:
        add_employee(runtime.sessions, "alice@example.com")
        with runtime.sessions() as session, session.begin():
            erased = address_token(settings.secret(), "Gone@Customer.example")
            session.add(Suppression(address_token=erased, kind="erased"))
        mails = [
            compose(message_id="<first@example.com>"),
            compose(subject="Again", message_id="<again@example.com>"),
            compose(to="Gone <gone@customer.example>", message_id="<gone@example.com>"),
        ]
        envelope = Envelope(mail_from="alice@example.com", rcpt_tos=(CAPTURE,))
        batch = [Submission(m.as_bytes(policy=policy_smtp), envelope, Channel.BCC) for m in mails]

        results = commit_batch(runtime.pipeline, batch)
    finally:
        runtime.close()

    assert [r.rules[:1] for r in results if isinstance(r, Result)] == [
        ("external-business-correspondent",),
        ("known-correspondent",),
        ("contact-erased",),
    ]


def test_a_contact_or_company_another_writer_made_first_is_found_not_made_twice(
    sessions: sessionmaker[Session],
) -> None:
    """The insert comes first when the caller has just looked; a writer on another
    connection (PostgreSQL scale-out) may have made the row in between."""
    now = datetime(2026, 11, 23, tzinfo=UTC)
    company = {"domain": "acme.example", "name": "Acme", "created_at": now}
    contact = {
        "address": "jane@acme.example",
        "name": "Jane Doe",
        "first_name": "Jane",
        "last_name": "Doe",
        "company_id": None,
        "created_at": now,
        "updated_at": now,
    }
    with sessions() as session, session.begin():
        conn = session.connection()
        made = [_get_or_create(conn, dict(company), "domain") for _ in range(2)]
        made += [_get_or_create(conn, dict(contact), "address", looked=True) for _ in range(2)]
        ids = (
            session.scalars(sa.select(Company.id)).all(),
            session.scalars(sa.select(Contact.id)).all(),
        )

    assert made[0] == made[1] and made[2] == made[3]
    assert ids == ([made[0]], [made[2]])
