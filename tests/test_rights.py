"""Data-subject rights through the real API and the real listener: erasure, objection, access."""

from __future__ import annotations

import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.models import (
    Company,
    Contact,
    ContactChange,
    DecisionRecord,
    Message,
    Participant,
    Suppression,
    Thread,
)
from app.retention import purge_once
from app.security import Role
from capture.archive import import_messages
from capture.parse import ParsedMessage, parse_message
from capture.pipeline import Envelope
from policies.model import Channel
from policies.observe import address_token
from tests.conftest import (
    CAPTURE,
    Running,
    add_employee,
    everything_stored,
    issue_token,
    server_url,
)
from tests.dovecot import Dovecot
from tests.mail import compose, send
from tests.test_contacts_filing import INBOX
from tests.test_imap import new_mailbox, sync

BOB = "bob@customer.example"


@pytest.fixture
def officer(running: Running) -> str:
    add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.COMPLIANCE)
    alone = compose(subject="Quote", message_id="<alone@example.com>")
    shared = compose(
        to=f"Bob Builder <{BOB}>, Carol <carol@partner.example>",
        subject="Meeting",
        message_id="<with-carol@example.com>",
    )
    assert send(running.smtp_port, alone)[0] == 250
    assert send(running.smtp_port, shared)[0] == 250
    return token


def _forward_from_bob() -> EmailMessage:
    body = (
        "Please file this.\n\n"
        "---------- Forwarded message ---------\n"
        f"From: Bob Builder <{BOB}>\n"
        "Date: Mon, 23 Nov 2026 at 08:00\n"
        "Subject: New order\n"
        "To: Alice <alice@example.com>\n\n"
        "We would like 40 more licences.\n"
    )
    return compose(to=CAPTURE, subject="Fwd: New order", body=body, message_id="<fwd@example.com>")


def _contacts(running: Running) -> list[str]:
    with running.runtime.sessions() as session:
        return list(session.scalars(sa.select(Contact.address).order_by(Contact.address)))


def test_erasure_removes_the_person_everywhere_and_no_channel_brings_them_back(
    running: Running, officer: str
) -> None:
    assert _contacts(running) == [BOB, "carol@partner.example"]

    with running.client(officer) as api:
        receipt = api.post("/api/v1/erasures", json={"address": "Bob@Customer.Example"})
    assert receipt.status_code == 201, receipt.text
    body = receipt.json()
    assert (body["contact_found"], body["messages_removed"], body["participations_removed"]) == (
        True,
        1,
        1,
    )
    assert body["wal_truncated"] is (None if server_url() else True)
    with running.runtime.sessions() as session:
        record = session.get(DecisionRecord, body["ledger_record"])
        assert record is not None and (record.outcome, record.hash) == (
            "erasure",
            body["ledger_hash"],
        )
        assert BOB not in repr(record.facts)
        (kind,) = session.scalars(sa.select(Suppression.kind)).all()
        assert kind == "erased"
        remaining = session.scalars(sa.select(Participant.address)).all()
        assert sorted(remaining) == ["alice@example.com", "carol@partner.example"]
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1

    # BCC and forward through the real listener: dropped by the guardrail, never re-created.
    again = compose(subject="Are you still there?", message_id="<again@example.com>")
    assert send(running.smtp_port, again)[0] == 250
    forward = _forward_from_bob()
    with running.runtime.sessions() as session:
        before = session.scalar(sa.select(sa.func.max(DecisionRecord.id)))
    assert send(running.smtp_port, forward)[0] == 250
    with running.runtime.sessions() as session:
        latest = session.scalars(
            sa.select(DecisionRecord).where(DecisionRecord.id > (before or 0) - 1)
        ).all()
    assert [(r.channel, r.outcome, r.rules) for r in latest] == [
        ("bcc", "drop", ["contact-erased"]),
        ("forward", "drop", ["contact-erased"]),
    ]
    assert _contacts(running) == ["carol@partner.example"]
    assert BOB.encode() not in everything_stored(running)
    with running.client(officer) as api:
        assert api.get("/api/v1/decisions/verify").json()["ok"] is True


def test_an_erased_person_is_not_brought_back_by_imap_or_import(
    running: Running, officer: str, dovecot: Dovecot, imap_user: str
) -> None:
    with running.client(officer) as api:
        assert api.post("/api/v1/erasures", json={"address": BOB}).status_code == 201
    from_bob = compose(
        sender=f"Bob Builder <{BOB}>",
        to="Alice <alice@example.com>",
        subject="Following up",
        message_id="<imap-bob@customer.example>",
    ).as_bytes()
    to_bob = compose(subject="History", message_id="<import-bob@example.com>").as_bytes()

    dovecot.append(imap_user, "INBOX", [from_bob])
    synced = sync(running.runtime, new_mailbox(running.runtime, dovecot, imap_user, ["INBOX"]))
    imported = import_messages(
        running.runtime.pipeline,
        iter([to_bob]),
        employee="alice@example.com",
        max_bytes=running.runtime.settings.max_message_bytes,
    )

    assert (synced.stats.messages, imported.read) == (1, 1)
    with running.runtime.sessions() as session:
        latest = session.scalars(
            sa.select(DecisionRecord).order_by(DecisionRecord.id.desc()).limit(2)
        ).all()
    assert sorted((r.channel, r.outcome, tuple(r.rules)) for r in latest) == [
        ("imap", "drop", ("contact-erased",)),
        ("import", "drop", ("contact-erased",)),
    ]
    assert _contacts(running) == ["carol@partner.example"]
    assert BOB.encode() not in everything_stored(running)


def test_erasure_removes_the_company_that_was_made_only_for_the_person(
    running: Running, officer: str
) -> None:
    jane = "jane@janedoe-consulting.example"
    assert send(running.smtp_port, compose(to=f"Jane Doe <{jane}>"))[0] == 250
    with running.client(officer) as api:
        for address in (jane, BOB):
            assert api.post("/api/v1/erasures", json={"address": address}).status_code == 201
    with running.runtime.sessions() as session:
        companies = session.scalars(sa.select(Company.domain)).all()
    assert companies == ["partner.example"]  # Bob's customer.example went with its last contact
    assert b"janedoe" not in everything_stored(running)


def test_erasure_leaves_no_history_entry_naming_the_erased_address(
    running: Running, officer: str
) -> None:
    """A likely job move is noted on the new contact, with the old address."""
    new = "bob.builder@newco.example"
    later = compose(to=f"Bob Builder <{new}>", message_id="<later@example.com>")
    assert send(running.smtp_port, later)[0] == 250
    with running.runtime.sessions() as session:
        noted = session.execute(sa.select(ContactChange.field, ContactChange.old_value)).all()
    assert [tuple(n) for n in noted] == [("likely-job-move", BOB)]

    with running.client(officer) as api:
        assert api.post("/api/v1/erasures", json={"address": BOB}).status_code == 201
    with running.runtime.sessions() as session:
        assert session.scalars(sa.select(ContactChange.field)).all() == []
    assert _contacts(running) == [new, "carol@partner.example"]
    assert BOB.encode() not in everything_stored(running)


@pytest.mark.parametrize("named", ["into", "merged"])
def test_erasing_either_address_of_a_merged_contact_erases_both(
    running: Running, officer: str, named: str
) -> None:
    """Two addresses of one person merged into one contact. The erasure names the one the CRM
    shows, or the one it no longer shows (the merge made it theirs as it made the other):
    both go, with the mail they alone stood for, and stay out."""
    alice = add_employee(running.runtime.sessions, "alice2@example.com")
    employee = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    new = "bob.builder@newco.example"
    later = compose(to=f"Bob Builder <{new}>", message_id="<later@example.com>")
    assert send(running.smtp_port, later)[0] == 250
    with running.runtime.sessions() as session:
        ids = {address: i for address, i in session.execute(sa.select(Contact.address, Contact.id))}
    with running.client(employee) as api:
        merged = api.post(f"/api/v1/contacts/{ids[BOB]}/merge", json={"into": ids[new]})
    assert merged.status_code == 200, merged.text

    with running.client(officer) as api:
        address = new if named == "into" else BOB
        receipt = api.post("/api/v1/erasures", json={"address": address}).json()
    assert (receipt["messages_removed"], receipt["participations_removed"]) == (2, 1)
    assert send(running.smtp_port, compose(message_id="<again@example.com>"))[0] == 250
    again = compose(to=f"Bob Builder <{new}>", message_id="<again-new@example.com>")
    assert send(running.smtp_port, again)[0] == 250
    assert _contacts(running) == ["carol@partner.example"]
    stored = everything_stored(running)
    assert BOB.encode() not in stored and new.encode() not in stored and b"Builder" not in stored


def test_erasure_removes_held_mail_the_person_wrote_to_others_too(holding: Running) -> None:
    """Without them among its participants, the guardrail at review would no longer see
    them, and their words could be captured."""
    alice = add_employee(holding.runtime.sessions, "alice@example.com")
    employee = issue_token(holding.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    officer = issue_token(holding.runtime.sessions, Role.COMPLIANCE)
    body = (
        "Please file this.\n\n"
        "---------- Forwarded message ---------\n"
        f"From: Bob Builder <{BOB}>\n"
        "Date: Mon, 23 Nov 2026 at 08:00\n"
        "Subject: My private matter\n"
        "To: Alice <alice@example.com>\n"
        "Cc: Carol <carol@partner.example>\n\n"
        "This is Bob writing: my BOBS-OWN-WORDS ...\n"
    )
    forward = compose(to=CAPTURE, subject="Fwd: My private matter", body=body)
    assert send(holding.smtp_port, forward)[0] == 250
    with holding.runtime.sessions() as session:
        assert session.scalars(sa.select(Message.outcome)).all() == ["hold"]

    with holding.client(officer) as api:
        receipt = api.post("/api/v1/erasures", json={"address": BOB}).json()
    with holding.client(employee) as api:
        queue = api.get("/api/v1/review").json()["items"]
    assert (receipt["messages_removed"], receipt["held_removed"], queue) == (1, 1, [])
    assert b"BOBS-OWN-WORDS" not in everything_stored(holding)


@pytest.mark.skipif(server_url() is not None, reason="SQLite's write-ahead log")
def test_an_erasure_says_when_a_reader_kept_the_log_and_the_retention_job_scrubs_it(
    running: Running, officer: str
) -> None:
    reader = sqlite3.connect(Path(running.runtime.settings.data_dir) / "mailroom.db")
    reader.isolation_level = None
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()  # a read in progress
    try:
        started = time.monotonic()
        with running.client(officer) as api:
            receipt = api.post("/api/v1/erasures", json={"address": BOB})
        waited = time.monotonic() - started
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert receipt.status_code == 201, receipt.text
    assert receipt.json()["wal_truncated"] is False and waited < 5
    assert BOB.encode() in everything_stored(running)  # in the log, no longer in the tables

    runtime = running.runtime
    purge_once(runtime.db, runtime.sessions, lambda: runtime.pipeline.engine.policy)
    assert BOB.encode() not in everything_stored(running)


def test_an_erasure_asked_with_a_unicode_domain_finds_the_person_and_keeps_them_out(
    running: Running, officer: str
) -> None:
    """The person writes their address as they know it; mail carries it in punycode."""
    written = "hans@bücher.example"
    assert send(running.smtp_port, compose(to=f"Hans Müller <{written}>"))[0] == 250
    assert "hans@xn--bcher-kva.example" in _contacts(running)
    with running.client(officer) as api:
        receipt = api.post("/api/v1/erasures", json={"address": written})
        refused = api.post("/api/v1/erasures", json={"address": "hans@bücher..example"})
    assert receipt.status_code == 201 and receipt.json()["contact_found"] is True
    assert refused.status_code == 422 and "not a mailbox address" in refused.text
    later = compose(to=f"Hans Müller <{written}>", message_id="<later@example.com>")
    assert send(running.smtp_port, later)[0] == 250
    assert _contacts(running) == [BOB, "carol@partner.example"]


def test_a_domain_idna_2003_spelled_otherwise_is_one_spelling_and_old_erasures_still_hold(
    running: Running, officer: str
) -> None:
    """straße.de is not strasse.de (IDNA 2008, as mail servers have it). Releases before
    2026-11-24 stored it as strasse.de in participants and digests, while filing made the
    contact xn--strae-oqa.de: an erasure found one and missed the other."""
    written = "hans@straße.de"
    assert send(running.smtp_port, compose(to=f"Hans <{written}>", message_id="<a@x>"))[0] == 250
    with running.runtime.sessions() as session:
        named = set(session.scalars(sa.select(Participant.address)))
    assert "hans@xn--strae-oqa.de" in named and "hans@strasse.de" not in named
    assert "hans@xn--strae-oqa.de" in _contacts(running)
    with running.client(officer) as api:
        receipt = api.post("/api/v1/erasures", json={"address": written})
    assert receipt.status_code == 201 and receipt.json()["contact_found"] is True
    with running.runtime.sessions() as session:
        named = set(session.scalars(sa.select(Participant.address)))
    assert not {"hans@xn--strae-oqa.de", "hans@strasse.de"} & named
    assert _contacts(running) == [BOB, "carol@partner.example"]

    # An objection recorded by an earlier release holds the digest of the old spelling.
    with running.runtime.sessions() as session, session.begin():
        old = address_token(running.runtime.settings.secret(), "greta@strasse.de")
        session.add(Suppression(address_token=old, kind="objected"))
    later = compose(to="Greta <greta@straße.de>", message_id="<later@example.com>")
    assert send(running.smtp_port, later)[0] == 250
    with running.runtime.sessions() as session:
        last = session.scalars(sa.select(DecisionRecord).order_by(DecisionRecord.id.desc())).first()
    assert last is not None and (last.outcome, last.rules) == ("drop", ["contact-objected"])
    assert "greta@xn--strae-oqa.de" not in _contacts(running)


def test_an_organization_address_cannot_be_erased(running: Running, officer: str) -> None:
    with running.client(officer) as api:
        refused = api.post("/api/v1/erasures", json={"address": "alice@example.com"})
    assert refused.status_code == 422
    assert _contacts(running) == [BOB, "carol@partner.example"]


def test_an_objection_drops_future_mail_and_keeps_what_was_filed(
    running: Running, officer: str
) -> None:
    with running.runtime.sessions() as session:
        bob = session.scalars(sa.select(Contact.id).where(Contact.address == BOB)).one()
    with running.client(officer) as api:
        receipt = api.post(f"/api/v1/contacts/{bob}/objection")
        missing = api.post("/api/v1/contacts/999/objection")
    assert receipt.status_code == 201 and receipt.json()["action"] == "objection"
    assert missing.status_code == 404

    assert send(running.smtp_port, compose(message_id="<later@example.com>"))[0] == 250
    with running.runtime.sessions() as session:
        last = session.scalars(sa.select(DecisionRecord).order_by(DecisionRecord.id.desc())).first()
        assert last is not None and (last.outcome, last.rules) == ("drop", ["contact-objected"])
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 2


def test_held_mail_an_objection_removes_leaves_no_text_in_the_database_files(
    holding: Running,
) -> None:
    add_employee(holding.runtime.sessions, "alice@example.com")
    officer = issue_token(holding.runtime.sessions, Role.COMPLIANCE)
    held = compose(subject="Dinner CANARY-SUBJECT", body="Love you CANARY-BODY\n")
    assert send(holding.smtp_port, held)[0] == 250
    with holding.client(officer) as api:
        done = api.post("/api/v1/objections", json={"address": BOB})
    assert done.status_code == 201 and done.json()["held_removed"] == 1
    assert b"CANARY" not in everything_stored(holding)
    with holding.runtime.sessions() as session:  # nor a thread, a digest of it with its date
        assert session.scalars(sa.select(Thread.id)).all() == []


def test_an_access_export_holds_everything_but_message_text_and_is_logged(
    running: Running, officer: str
) -> None:
    with running.runtime.sessions() as session:
        bob = session.scalars(sa.select(Contact.id).where(Contact.address == BOB)).one()
    with running.client(officer) as api:
        export = api.get(f"/api/v1/contacts/{bob}/export")

    assert export.status_code == 200, export.text
    body = export.json()
    assert (body["contact"]["address"], body["contact"]["name"]) == (BOB, "Bob Builder")
    assert body["company"]["domain"] == "customer.example"
    assert [(m["role"], m["outcome"]) for m in body["messages"]] == [
        ("to", "capture"),
        ("to", "capture"),
    ]
    assert body["relationships"][0]["sent_count"] == 2
    assert "Quote" not in export.text and "Meeting" not in export.text
    with running.runtime.sessions() as session:
        last = session.scalars(sa.select(DecisionRecord).order_by(DecisionRecord.id.desc())).first()
        assert last is not None and (last.outcome, last.facts) == (
            "access-export",
            {"contact_id": bob},
        )


def test_an_objection_covers_the_addresses_merged_into_the_contact(
    running: Running, officer: str
) -> None:
    """Bob's old address was merged into his new one: both are his, and the old one keeps
    leading to his contact. He objects: mail to either address is dropped from then on."""
    employee = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=1)
    new = "bob.builder@newco.example"
    later = compose(to=f"Bob Builder <{new}>", message_id="<later@example.com>")
    assert send(running.smtp_port, later)[0] == 250
    with running.runtime.sessions() as session:
        ids = {address: i for address, i in session.execute(sa.select(Contact.address, Contact.id))}
    with running.client(employee) as api:
        assert api.post(f"/api/v1/contacts/{ids[BOB]}/merge", json={"into": ids[new]}).is_success
    with running.client(officer) as api:
        assert api.post(f"/api/v1/contacts/{ids[new]}/objection").status_code == 201

    old = compose(subject="Old address", message_id="<old-address@example.com>")
    assert send(running.smtp_port, old)[0] == 250
    with running.runtime.sessions() as session:
        last = session.scalars(sa.select(DecisionRecord).order_by(DecisionRecord.id.desc())).first()
        subjects = session.scalars(sa.select(Message.subject)).all()
    assert last is not None and (last.outcome, last.rules) == ("drop", ["contact-objected"])
    assert "Old address" not in subjects


def test_an_access_export_lists_the_mail_of_the_addresses_merged_into_the_contact(
    running: Running, officer: str
) -> None:
    """Bob's old address was merged into his new one: the mail that named the old one is
    his too, and the contact it is filed under is the one exported."""
    employee = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=1)
    new = "bob.builder@newco.example"
    later = compose(to=f"Bob Builder <{new}>", message_id="<later@example.com>")
    assert send(running.smtp_port, later)[0] == 250
    with running.runtime.sessions() as session:
        ids = {address: i for address, i in session.execute(sa.select(Contact.address, Contact.id))}
    with running.client(employee) as api:
        assert api.post(f"/api/v1/contacts/{ids[BOB]}/merge", json={"into": ids[new]}).is_success
    with running.client(officer) as api:
        export = api.get(f"/api/v1/contacts/{ids[new]}/export")

    assert export.status_code == 200, export.text
    assert len(export.json()["messages"]) == 3  # two to the old address, one to the new


def test_an_access_export_holds_what_signatures_taught_about_the_person(
    running: Running, officer: str
) -> None:
    """Bob's signature gave his contact a title and a phone number, each change kept in its
    history: that is held about him, so his export says it."""
    signed = (
        "Hello Alice,\n\nwe accept the quote.\n\nBest regards,\n\n"
        "Bob Builder\nHead of Procurement\nCustomer Ltd\nTel: +44 20 7946 0958\n"
    )
    from_bob = compose(
        sender=f"Bob Builder <{BOB}>",
        to="Alice <alice@example.com>",
        body=signed,
        message_id="<signed@customer.example>",
    )
    running.runtime.pipeline.process(from_bob.as_bytes(), INBOX, Channel.IMPORT)
    with running.runtime.sessions() as session:
        bob = session.scalars(sa.select(Contact).where(Contact.address == BOB)).one()
    assert (bob.title, bob.phone) == ("Head of Procurement", "+442079460958")

    with running.client(officer) as api:
        export = api.get(f"/api/v1/contacts/{bob.id}/export")

    assert export.status_code == 200, export.text
    body = export.json()
    assert (body["contact"]["title"], body["contact"]["phone"]) == (
        "Head of Procurement",
        "+442079460958",
    )
    assert "Customer Ltd" in body["contact"]["organization"]
    assert {(c["field"], c["new_value"]) for c in body["history"]} >= {
        ("title", "Head of Procurement"),
        ("phone", "+442079460958"),
    }


def test_an_erasure_removes_the_mail_the_person_had_only_with_employees_on_other_domains(
    running: Running, officer: str
) -> None:
    """Dave is an employee whose address is at a domain the organization does not list
    (a subsidiary's). Mail between Bob and our team alone is Bob's to erase all the same."""
    add_employee(running.runtime.sessions, "dave@subsidiary.example")
    with_dave = compose(
        to=f"Bob Builder <{BOB}>",
        headers={"Cc": "Dave <dave@subsidiary.example>"},
        message_id="<d@x>",
    )
    assert send(running.smtp_port, with_dave)[0] == 250

    with running.client(officer) as api:
        receipt = api.post("/api/v1/erasures", json={"address": BOB}).json()

    assert (receipt["messages_removed"], receipt["participations_removed"]) == (2, 1)
    with running.runtime.sessions() as session:
        left = session.scalars(sa.select(Message.message_id)).all()
    assert left == ["<with-carol@example.com>"]


def test_an_erasure_finds_an_address_whose_local_part_has_capitals_beyond_ascii(
    running: Running, officer: str
) -> None:
    """Mail keeps a local part as written (`ÉLODIE@`); SQL's lower() folds only A to Z, so
    the address must be matched as Python folds it, or her contact and mail stay."""
    raw = (
        "From: Alice <alice@example.com>\r\n"
        "To: =?utf-8?q?=C3=89lodie?= Martin <ÉLODIE@exemple.fr>\r\n"
        "Subject: Devis\r\n"
        "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
        "Message-ID: <elodie@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Bonjour,\r\n\r\nle devis ELODIES-QUOTE.\r\n"
    ).encode()
    assert send(running.smtp_port, raw)[0] == 250
    assert "ÉLODIE@exemple.fr" in _contacts(running)

    with running.client(officer) as api:
        receipt = api.post("/api/v1/erasures", json={"address": "élodie@exemple.fr"})

    assert receipt.status_code == 201, receipt.text
    assert (receipt.json()["contact_found"], receipt.json()["messages_removed"]) == (True, 1)
    assert _contacts(running) == [BOB, "carol@partner.example"]
    assert b"ELODIES-QUOTE" not in everything_stored(running)


def test_an_erasure_finds_an_address_written_with_decomposed_accents_and_keeps_it_out(
    running: Running, officer: str
) -> None:
    """`émile@` may come as `e` and a combining accent (NFD), one address to every reader
    (RFC 6532 asks for NFC): her contact was made in NFC (email-validator's), her mail kept
    NFD. An erasure asked as typed (NFC) left her mail and her address in it, and her next
    message, digested otherwise, brought her contact back."""
    decomposed = unicodedata.normalize("NFD", "émile") + "@exemple.fr"
    envelope = Envelope("alice@example.com", sent_folder=True)

    def mail_to_emile(number: int) -> bytes:
        mail = compose(to=f"Emile Zola <{decomposed}>", body="EMILES-QUOTE\n")
        mail.replace_header("Message-ID", f"<emile-{number}@example.com>")
        return mail.as_bytes()

    running.runtime.pipeline.process(mail_to_emile(1), envelope, Channel.IMPORT)
    assert "émile@exemple.fr" in _contacts(running)
    with running.runtime.sessions() as session, session.begin():  # as earlier releases kept it
        session.execute(
            sa.update(Participant)
            .where(Participant.address.endswith("@exemple.fr"))
            .values(address=decomposed)
        )
    with running.client(officer) as api:
        receipt = api.post("/api/v1/erasures", json={"address": "émile@exemple.fr"})
    assert receipt.status_code == 201, receipt.text
    assert receipt.json()["messages_removed"] == 1

    running.runtime.pipeline.process(mail_to_emile(2), envelope, Channel.IMPORT)
    assert _contacts(running) == [BOB, "carol@partner.example"]
    assert b"EMILES-QUOTE" not in everything_stored(running)


def test_an_employee_address_at_another_domain_cannot_be_erased_or_objected_to(
    running: Running, officer: str
) -> None:
    """Employees are not contacts, whatever their domain: suppressing Dave's address would
    drop every message he sends, and the erasure would delete the mail he had with Alice."""
    add_employee(running.runtime.sessions, "dave@subsidiary.example", aliases=("d@dave.example",))
    internal = compose(to="Dave <dave@subsidiary.example>", message_id="<to-dave@example.com>")
    assert send(running.smtp_port, internal)[0] == 250
    with running.runtime.sessions() as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(Message))

    with running.client(officer) as api:
        erasure = api.post("/api/v1/erasures", json={"address": "Dave@Subsidiary.example"})
        objection = api.post("/api/v1/objections", json={"address": "d@dave.example"})

    assert (erasure.status_code, objection.status_code) == (422, 422)
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == before
        assert session.scalars(sa.select(Suppression.kind)).all() == []
    from_dave = compose(sender="Dave <dave@subsidiary.example>", message_id="<from-dave@x>")
    assert send(running.smtp_port, from_dave, mail_from="dave@subsidiary.example")[0] == 250
    with running.runtime.sessions() as session:
        last = session.scalars(sa.select(DecisionRecord).order_by(DecisionRecord.id.desc())).first()
    assert last is not None and last.outcome == "capture"


def test_an_erasure_removes_the_threads_left_without_messages(
    running: Running, officer: str
) -> None:
    """A thread's key is a digest of its root Message-ID, or of its subject and
    participants: one left with none of its messages holds nothing but that. A thread the
    person shared with others stays."""
    with running.runtime.sessions() as session:
        threads = dict(session.execute(sa.select(Message.message_id, Message.thread_id)).all())

    with running.client(officer) as api:
        assert api.post("/api/v1/erasures", json={"address": BOB}).status_code == 201

    with running.runtime.sessions() as session:
        left = session.scalars(sa.select(Thread.id)).all()
    assert left == [threads["<with-carol@example.com>"]]


def test_an_erasure_waits_for_mail_being_filed_with_the_person_and_erases_it_too(
    running: Running, officer: str
) -> None:
    """A batch (the SMTP writer's group commit, a mailbox sync) decides and files in one
    transaction. An erasure reading before that batch commits misses what it files with the
    person, which then stays although the receipt says they were erased."""
    pipeline = running.runtime.pipeline

    def batch(conn: sa.Connection, message: ParsedMessage, erase: Callable[[], None]) -> None:
        filed = pipeline.process_in(conn, message, Envelope("alice@example.com"), Channel.BCC)
        assert filed.outcome.value == "capture"
        erase()

    _erase_during_a_batch(running, officer, batch)


def test_an_erasure_between_a_batchs_consent_reads_and_its_first_decision_is_seen(
    running: Running, officer: str
) -> None:
    """A batch reads who is erased or objects as it begins. An erasure committing before
    the batch's first decision would not be seen by it: the batch takes the log's lock
    before it reads, so the erasure waits for it, and then erases what it filed."""
    pipeline = running.runtime.pipeline

    def batch(conn: sa.Connection, message: ParsedMessage, erase: Callable[[], None]) -> None:
        lookups = pipeline.lookups(conn)
        lookups.prefetch([message])  # consent as the batch begins: nobody erased yet
        erase()
        envelope = Envelope("alice@example.com")
        pipeline.process_in(conn, message, envelope, Channel.BCC, lookups=lookups)

    _erase_during_a_batch(running, officer, batch)


def _erase_during_a_batch(
    running: Running,
    officer: str,
    batch: Callable[[sa.Connection, ParsedMessage, Callable[[], None]], None],
) -> None:
    """Run `batch` in one transaction filing mail with Bob; it calls `erase` to have Bob's
    erasure requested meanwhile (given a second to finish, or to wait for the batch). After
    the commit, nothing of Bob may be left."""
    in_flight = parse_message(compose(subject="In flight", message_id="<fly@x>").as_bytes())
    receipts: list[int] = []

    def request() -> None:
        with running.client(officer) as api:
            receipts.append(api.post("/api/v1/erasures", json={"address": BOB}).status_code)

    erasing = threading.Thread(target=request)

    def erase() -> None:
        erasing.start()
        erasing.join(timeout=1.0)  # the erasure is done, or waiting for the batch

    with running.runtime.pipeline.connections().connect() as conn:
        transaction = conn.begin()
        batch(conn, in_flight, erase)
        transaction.commit()
    erasing.join(timeout=60)

    assert receipts == [201]
    with running.runtime.sessions() as session:
        named = session.scalars(sa.select(Participant.address)).all()
    assert BOB not in named and _contacts(running) == ["carol@partner.example"]


def _newest_filed(api: httpx.Client) -> tuple[int, int, int, int]:
    """The ids of the newest message, its thread, its contact and the contact's company, as
    an integration reads them."""
    newest = api.get("/api/v1/messages", params={"limit": 1}).json()["items"][0]
    (contact,) = newest["contacts"]
    return newest["id"], newest["thread_id"], contact["id"], contact["company"]["id"]


def test_ids_of_erased_mail_and_people_are_never_given_to_new_ones(
    running: Running, officer: str
) -> None:
    """An integration keyed by ids (the API, webhooks, page links) deletes what an erasure
    reported erased. Were the next contact or message given an erased one's id, it would
    take a different person for the erased one, or show them under the old link."""
    integration = issue_token(
        running.runtime.sessions, Role.INTEGRATION, scopes=("messages:read", "contacts:read")
    )
    dave = compose(to="Dave <dave@supplier.example>", message_id="<dave@example.com>")
    assert send(running.smtp_port, dave)[0] == 250
    with running.client(integration) as api:
        erased = _newest_filed(api)
    with running.client(officer) as api:
        receipt = api.post("/api/v1/erasures", json={"address": "dave@supplier.example"})
    assert receipt.status_code == 201, receipt.text

    erin = compose(to="Erin <erin@vendor.example>", message_id="<erin@example.com>")
    assert send(running.smtp_port, erin)[0] == 250
    with running.client(integration) as api:
        filed = _newest_filed(api)
        assert api.get(f"/api/v1/contacts/{erased[2]}").status_code == 404
    assert all(new > old for new, old in zip(filed, erased, strict=True)), (filed, erased)


@pytest.mark.parametrize("request_path", ["/api/v1/objections", "/api/v1/erasures"])
def test_a_colleagues_held_copy_goes_beside_a_capture_that_stays(
    holding: Running, request_path: str
) -> None:
    """Mail held for Alice and Carol that Alice captured at review: Carol's copy still waits
    for her, with Bob in it. An objection or erasure removes mail with him still waiting
    for review, and so Carol's copy, while Alice's capture stays (without him, if erased)."""
    alice = add_employee(holding.runtime.sessions, "alice@example.com")
    carol = add_employee(holding.runtime.sessions, "carol@example.com")
    officer = issue_token(holding.runtime.sessions, Role.COMPLIANCE)
    tokens = [
        issue_token(holding.runtime.sessions, Role.EMPLOYEE, employee_id=e) for e in (alice, carol)
    ]
    mail = compose(to=f"Bob Builder <{BOB}>, Dan <dan@customer.example>, Carol <carol@example.com>")
    for submitter in ("alice@example.com", "carol@example.com"):
        assert send(holding.smtp_port, mail, mail_from=submitter)[0] == 250
    with holding.client(tokens[0]) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
        assert api.post(f"/api/v1/review/{item['id']}/capture").status_code == 204

    with holding.client(officer) as api:
        receipt = api.post(request_path, json={"address": BOB}).json()
    with holding.client(tokens[1]) as api:
        carols = api.get("/api/v1/review").json()["items"]
    with holding.client(tokens[0]) as api:
        kept = api.get(f"/api/v1/messages/{item['id']}")
    assert (receipt["held_removed"], carols, kept.status_code) == (1, [], 200)
    assert [o["email"] for o in kept.json()["owners"]] == ["alice@example.com"]
