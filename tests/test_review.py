"""An employee's review queue and own settings, through the real listener and the real API."""

from __future__ import annotations

import copy
from email.message import EmailMessage
from pathlib import Path

import sqlalchemy as sa

from app.models import (
    Contact,
    DecisionRecord,
    Employee,
    Message,
    PersonalContact,
    Relationship,
    Suppression,
    Thread,
)
from app.security import Role
from app.settings import Settings
from app.web import actions
from capture.pipeline import Envelope
from policies.model import Channel
from policies.observe import address_token
from tests.conftest import (
    CAPTURE,
    FIXTURES,
    HOLD_EXTERNAL,
    Running,
    add_employee,
    everything_stored,
    issue_token,
    run_service,
)
from tests.mail import compose, decided, send
from tests.web import sign_in


def _tokens(running: Running) -> tuple[str, str]:
    sessions = running.runtime.sessions
    alice = add_employee(sessions, "alice@example.com")
    bob = add_employee(sessions, "bob@example.com")
    return (
        issue_token(sessions, Role.EMPLOYEE, employee_id=alice),
        issue_token(sessions, Role.EMPLOYEE, employee_id=bob),
    )


def _last_decision(running: Running) -> DecisionRecord:
    with running.runtime.sessions() as session:
        found = session.scalars(sa.select(DecisionRecord).order_by(DecisionRecord.id.desc()))
        return found.first()  # type: ignore[return-value]


def test_a_held_message_waits_for_its_owner_who_captures_it(holding: Running) -> None:
    alice, bob = _tokens(holding)
    assert send(holding.smtp_port, compose())[0] == 250

    with holding.client(alice) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
    with holding.client(bob) as api:
        theirs = api.get("/api/v1/review").json()["items"]
        stolen = api.post(f"/api/v1/review/{item['id']}/capture")
        hidden = api.get(f"/api/v1/messages/{item['id']}")
    assert item["subject"] == "Quote for 20 licences" and item["held_until"] is not None
    assert (theirs, stolen.status_code, hidden.status_code) == ([], 404, 404)
    with holding.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0

    with holding.client(alice) as api:
        captured = api.post(f"/api/v1/review/{item['id']}/capture")
        queue = api.get("/api/v1/review").json()["items"]
    with holding.client(bob) as api:
        seen = api.get(f"/api/v1/messages/{item['id']}").json()

    assert (captured.status_code, queue) == (204, [])
    assert (seen["outcome"], seen["visibility"]) == ("capture", "shared")
    assert [c["address"] for c in seen["contacts"]] == ["bob@customer.example"]
    last = _last_decision(holding)
    assert (last.outcome, last.facts) == ("review-capture", {"message_id": item["id"]})


def test_capturing_mail_a_colleague_filed_too_keeps_it_to_its_owners(holding: Running) -> None:
    """Sharing it is not one owner's choice: PATCH /messages refuses to widen it as well."""
    alice, bob = _tokens(holding)
    carol = issue_token(
        holding.runtime.sessions,
        Role.EMPLOYEE,
        employee_id=add_employee(holding.runtime.sessions, "carol@example.com"),
    )
    mail = compose(
        sender="Alice <alice@example.com>",
        to="Dan <dan@customer.example>, Bob <bob@example.com>",
        subject="About my health",
    )
    assert send(holding.smtp_port, mail, mail_from="alice@example.com")[0] == 250
    assert send(holding.smtp_port, mail, mail_from="bob@example.com")[0] == 250
    with holding.client(bob) as api:
        (item,) = api.get("/api/v1/review").json()["items"]

    with holding.client(alice) as api:
        assert api.post(f"/api/v1/review/{item['id']}/capture").status_code == 204
        seen = api.get(f"/api/v1/messages/{item['id']}").json()
    with holding.client(carol) as api:
        hidden = api.get(f"/api/v1/messages/{item['id']}")
    assert (seen["outcome"], seen["visibility"], hidden.status_code) == ("capture", "private", 404)


def test_held_mail_to_a_role_mailbox_can_be_captured(holding: Running) -> None:
    """A role mailbox (support@, sales@, info@...) stays a participant, never a contact, so
    it has no relationship either; a capture at review counted one with no contact, which
    the database refused: Capture answered 500 for any such mail, every time."""
    alice, _ = _tokens(holding)
    mail = compose(to="Acme Support <support@customer.example>, Bob <bob@customer.example>")
    assert send(holding.smtp_port, mail)[0] == 250
    with holding.client(alice) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
        captured = api.post(f"/api/v1/review/{item['id']}/capture")
        seen = api.get(f"/api/v1/messages/{item['id']}").json()
    assert captured.status_code == 204
    assert [c["address"] for c in seen["contacts"]] == ["bob@customer.example"]
    assert len(seen["participants"]) == 3  # the role mailbox stays one


def test_capturing_held_mail_makes_no_contact_of_a_colleagues_address_at_another_domain(
    holding: Running,
) -> None:
    """Employees are never contacts, at any domain (README), and filing a capture keeps
    them out; a capture at review skipped only the organization's domains, so a colleague's
    alias elsewhere became a contact (one an erasure or objection could then suppress)."""
    alice, _ = _tokens(holding)
    add_employee(holding.runtime.sessions, "carol@example.com", aliases=("carol@carol.example",))
    mail = compose(to="Bob Builder <bob@customer.example>, Carol <carol@carol.example>")
    assert send(holding.smtp_port, mail)[0] == 250
    with holding.client(alice) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
        assert api.post(f"/api/v1/review/{item['id']}/capture").status_code == 204
    with holding.runtime.sessions() as session:
        contacts = session.scalars(sa.select(Contact.address)).all()
        related = session.scalar(sa.select(sa.func.count()).select_from(Relationship))
    assert (contacts, related) == (["bob@customer.example"], 1)


def test_capturing_held_mail_counts_a_contact_once_however_often_it_names_them(
    holding: Running,
) -> None:
    """README: a message counts once for each contact, however many of the contact's
    addresses it names, as filing counts it. A capture at review counted each participant:
    Bob in To and in Cc (a reply to all) made two messages sent to him."""
    alice, _ = _tokens(holding)
    mail = compose(headers={"Cc": "Bob Builder <bob@customer.example>"})
    assert send(holding.smtp_port, mail)[0] == 250
    with holding.client(alice) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
        assert api.post(f"/api/v1/review/{item['id']}/capture").status_code == 204
    with holding.runtime.sessions() as session:
        counts = session.execute(sa.select(Relationship.sent_count, Relationship.received_count))
        assert [tuple(c) for c in counts] == [(1, 0)]


def test_discarding_a_held_message_removes_it_and_records_only_the_choice(
    holding: Running,
) -> None:
    alice, _ = _tokens(holding)
    assert send(holding.smtp_port, compose(subject="SECRET-SUBJECT"))[0] == 250
    with holding.client(alice) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
        discarded = api.post(f"/api/v1/review/{item['id']}/discard")
        again = api.post(f"/api/v1/review/{item['id']}/discard")

    assert (discarded.status_code, again.status_code) == (204, 404)
    with holding.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
        # nor its thread: a digest of that mail and its dates, with no message left in it
        assert session.scalar(sa.select(sa.func.count()).select_from(Thread)) == 0
    last = _last_decision(holding)
    assert last.outcome == "review-discard" and "SECRET" not in repr(last.facts)


def test_a_discarded_held_message_leaves_no_text_in_the_database_files(
    holding: Running,
) -> None:
    """SQLite keeps deleted pages in its write-ahead log until a checkpoint truncates it."""
    alice, _ = _tokens(holding)
    held = compose(
        to="Partner CANARY-NAME <canary-addr@customer.example>",
        subject="Dinner CANARY-SUBJECT",
        body="Love you CANARY-BODY\n",
    )
    assert send(holding.smtp_port, held)[0] == 250
    with holding.client(alice) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
        assert api.post(f"/api/v1/review/{item['id']}/discard").status_code == 204
    assert b"CANARY" not in everything_stored(holding).upper()


def test_a_personal_contact_added_while_held_blocks_the_capture(holding: Running) -> None:
    alice, _ = _tokens(holding)
    assert send(holding.smtp_port, compose())[0] == 250
    with holding.client(alice) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
        added = api.post("/api/v1/me/personal-contacts", json={"address": "bob@customer.example"})
        blocked = api.post(f"/api/v1/review/{item['id']}/capture")
    assert added.status_code == 201
    assert blocked.status_code == 409 and "personal-contacts" in blocked.json()["title"]


def test_an_objection_an_earlier_release_spelled_otherwise_blocks_the_capture(
    holding: Running,
) -> None:
    """Before 2026-11-24 an objection to hans@straße.de was kept as the digest of
    hans@strasse.de (IDNA 2003); a review capture checks that spelling too, as filing does."""
    alice, _ = _tokens(holding)
    assert send(holding.smtp_port, compose(to="Hans <hans@straße.de>"))[0] == 250
    with holding.client(alice) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
    with holding.runtime.sessions() as session, session.begin():
        old = address_token(holding.runtime.settings.secret(), "hans@strasse.de")
        session.add(Suppression(address_token=old, kind="objected"))
    with holding.client(alice) as api:
        blocked = api.post(f"/api/v1/review/{item['id']}/capture")
    assert blocked.status_code == 409 and "objected" in blocked.json()["title"]


def test_pausing_capture_drops_the_next_message_until_resumed(running: Running) -> None:
    alice, _ = _tokens(running)
    with running.client(alice) as api:
        paused = api.patch("/api/v1/me/settings", json={"capture_paused": True}).json()
        assert send(running.smtp_port, compose(message_id="<p1@example.com>"))[0] == 250
        dropped = _last_decision(running)
        api.patch("/api/v1/me/settings", json={"capture_paused": False})
        assert send(running.smtp_port, compose(message_id="<p2@example.com>"))[0] == 250
        resumed = _last_decision(running)

    assert paused == {"capture_paused": True, "private_tags": []}
    assert (dropped.outcome, dropped.rules) == ("drop", ["capture-paused"])
    assert resumed.outcome == "capture"


def test_a_private_tag_of_ones_own_drops_tagged_mail(running: Running) -> None:
    alice, _ = _tokens(running)
    with running.client(alice) as api:
        tags = api.patch("/api/v1/me/settings", json={"private_tags": ["#Mine"]}).json()
    assert send(running.smtp_port, compose(subject="Lunch #mine"))[0] == 250
    dropped = _last_decision(running)
    assert tags["private_tags"] == ["#mine"]
    assert (dropped.outcome, dropped.rules) == ("drop", ["marked-private"])


def test_a_personal_contact_with_a_unicode_domain_drops_their_mail(running: Running) -> None:
    alice, _ = _tokens(running)
    with running.client(alice) as api:
        added = api.post("/api/v1/me/personal-contacts", json={"address": "hans@bücher.example"})
        refused = api.post("/api/v1/me/personal-contacts", json={"address": "hans@-.example"})
    assert (added.status_code, refused.status_code) == (201, 422)
    assert send(running.smtp_port, compose(to="Hans <hans@bücher.example>"))[0] == 250
    assert _last_decision(running).rules == ["personal-contact"]


def test_personal_contacts_are_kept_as_digests_and_drop_their_mail(running: Running) -> None:
    alice, bob = _tokens(running)
    with running.client(alice) as api:
        added = api.post("/api/v1/me/personal-contacts", json={"address": "Bob@customer.example"})
        twice = api.post("/api/v1/me/personal-contacts", json={"address": "bob@customer.example"})
        listed = api.get("/api/v1/me/personal-contacts").json()["items"]
    with running.client(bob) as api:
        not_bobs = api.delete(f"/api/v1/me/personal-contacts/{added.json()['id']}")
    assert send(running.smtp_port, compose())[0] == 250
    dropped = _last_decision(running)

    assert added.json()["id"] == twice.json()["id"] and len(listed) == 1
    assert "address" not in listed[0]
    assert not_bobs.status_code == 404
    assert (dropped.outcome, dropped.rules) == ("drop", ["personal-contact"])
    with running.runtime.sessions() as session:
        (token,) = session.scalars(sa.select(PersonalContact.address_token)).all()
        assert "bob" not in token

    with running.client(alice) as api:
        removed = api.delete(f"/api/v1/me/personal-contacts/{added.json()['id']}")
    assert send(running.smtp_port, compose(message_id="<after@example.com>"))[0] == 250
    assert removed.status_code == 204 and _last_decision(running).outcome == "capture"


def _dinner() -> EmailMessage:
    return compose(
        sender="Alice <alice@example.com>",
        to="Dan <dan@customer.example>, Bob <bob@example.com>",
        subject="Dinner on Friday?",
        body="Dan, shall we have dinner on Friday? CANARY-TEXT\n",
    )


def _held_for_both(running: Running) -> int:
    """The same mail BCC'd by Alice and by Bob, held for each: one message, two owners."""
    mail = _dinner()
    assert send(running.smtp_port, mail, mail_from="alice@example.com")[0] == 250
    assert send(running.smtp_port, mail, mail_from="bob@example.com")[0] == 250
    with running.runtime.sessions() as session:
        (message_id,) = session.scalars(sa.select(Message.id)).all()
    return message_id


def test_each_owner_reviews_their_own_copy_of_mail_held_for_both(holding: Running) -> None:
    """Alice's capture took Bob's copy out of his queue and into his captures, though he
    never chose to capture it, and his discard answered 404. Each copy is its owner's: his
    stays in his queue, not among his captures, until he decides; his discard removes his
    copy alone, and the message (with its text) goes once no one keeps it."""
    alice, bob = _tokens(holding)
    message_id = _held_for_both(holding)

    with holding.client(alice) as api:
        assert api.post(f"/api/v1/review/{message_id}/capture").status_code == 204
    with holding.client(bob) as api:
        queue = [item["id"] for item in api.get("/api/v1/review").json()["items"]]
        seen = api.get(f"/api/v1/messages/{message_id}").json()
    with holding.runtime.sessions() as session:
        bob_id = session.scalar(sa.select(Employee.id).where(Employee.email == "bob@example.com"))
        assert bob_id is not None
        bobs_captures = [m.id for m in actions.captures(session, bob_id)]
    assert (queue, seen["outcome"], bobs_captures) == ([message_id], "hold", [])

    with holding.client(bob) as api:
        discarded = api.post(f"/api/v1/review/{message_id}/discard")
        hidden = api.get(f"/api/v1/messages/{message_id}")
    with holding.client(alice) as api:
        kept = api.get(f"/api/v1/messages/{message_id}").json()
    assert (discarded.status_code, hidden.status_code) == (204, 404)
    assert (kept["outcome"], kept["body_text"]) == ("capture", seen["body_text"])
    assert [o["email"] for o in kept["owners"]] == ["alice@example.com"]
    with holding.runtime.sessions() as session:  # Alice's alone: Bob chose nothing to count
        assert session.scalar(sa.select(sa.func.count()).select_from(Relationship)) == 1


def test_each_owner_of_mail_held_for_both_is_shown_their_own_decision(holding: Running) -> None:
    """Bob's review item named Alice's decision, the first filed: the reason he was shown
    was one given for her. Each owner's item names the decision that held their copy, and
    a capture at review, the choice that keeps it now (its record in the log)."""
    alice, bob = _tokens(holding)
    alices = decided(send(holding.smtp_port, _dinner(), mail_from="alice@example.com"))
    bobs = decided(send(holding.smtp_port, _dinner(), mail_from="bob@example.com"))

    with holding.client(bob) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
    with holding.client(alice) as api:
        (hers,) = api.get("/api/v1/review").json()["items"]
        assert api.post(f"/api/v1/review/{item['id']}/capture").status_code == 204
        captured = api.get(f"/api/v1/messages/{item['id']}").json()
    chosen = _last_decision(holding)
    with holding.client(bob) as api:
        (still,) = api.get("/api/v1/review").json()["items"]
        waiting = api.get(f"/api/v1/messages/{item['id']}").json()
    with holding.runtime.sessions() as session:
        bob_id = session.scalar(sa.select(Employee.id).where(Employee.email == "bob@example.com"))
        assert bob_id is not None
    with sign_in(holding, bob_id) as page:
        shown = page.get(f"/mail/messages/{item['id']}").text

    assert (hers["id"], hers["decision_id"], item["decision_id"]) == (item["id"], alices, bobs)
    assert (chosen.outcome, captured["decision_id"]) == ("review-capture", chosen.id)
    assert (still["decision_id"], waiting["decision_id"]) == (bobs, bobs)
    assert f"decision {bobs}<" in shown


def test_held_mail_goes_once_the_last_owner_waiting_for_it_discards_it(
    holding: Running,
) -> None:
    alice, bob = _tokens(holding)
    message_id = _held_for_both(holding)
    with holding.client(alice) as api:
        assert api.post(f"/api/v1/review/{message_id}/discard").status_code == 204
    with holding.client(bob) as api:
        (item,) = api.get("/api/v1/review").json()["items"]
        assert item["id"] == message_id
        assert api.post(f"/api/v1/review/{message_id}/discard").status_code == 204
    assert b"CANARY" not in everything_stored(holding).upper()


def _bobs_mail(subject: str, body: str) -> EmailMessage:
    """Bob's mail to Dan at a customer, Alice in Cc."""
    return compose(
        sender="Bob <bob@example.com>",
        to="Dan <dan@customer.example>",
        headers={"Cc": "Alice <alice@example.com>"},
        subject=subject,
        body=body,
    )


def _sent_counts(running: Running) -> list[tuple[str, int]]:
    """Each employee's count of mail sent to a contact, as their relationships hold it."""
    with running.runtime.sessions() as session:
        rows = session.execute(
            sa.select(Employee.email, Relationship.sent_count).join(
                Employee, Employee.id == Relationship.employee_id
            )
        )
        return [(str(email), int(count)) for email, count in rows]


def _forwarded(original: EmailMessage) -> EmailMessage:
    """Bob's forward of `original` to the capture address, as an attachment."""
    forward = compose(sender="Bob <bob@example.com>", to=CAPTURE, subject="Fwd", body="CRM.\n")
    forward.add_attachment(original)
    return forward


def test_my_capture_of_mail_held_for_me_counts_after_a_colleague_captured_it_at_review(
    settings: Settings, tmp_path: Path
) -> None:
    """Bob's mail to Dan, held for him and for Alice (in Cc); Alice captures it at review;
    Bob then forwards it (a capture). His forward joined the message, which was a capture
    already, and changed nothing: his copy stayed in his queue, to be purged at its
    deadline, uncounted with Dan, his capture lost; without Alice's choice it was captured
    (app/filing.py `_take_text`)."""
    rules = tmp_path / "forwards-captured.yaml"
    forwards = (
        "rules:\n  - id: forwards-captured\n    description: Mail an employee forwards is"
        " business.\n    when: {channel-in: {channels: [forward]}}\n    outcome: capture\n"
    )
    rules.write_text(HOLD_EXTERNAL.replace("rules:\n", forwards, 1))
    mail = _bobs_mail("Dinner on Friday?", "Dan, shall we have dinner on Friday? CANARY-TEXT\n")
    with run_service(settings.model_copy(update={"policy": rules})) as running:
        alice, bob = _tokens(running)
        for submitter in ("alice@example.com", "bob@example.com"):
            assert send(running.smtp_port, mail, mail_from=submitter)[0] == 250
        with running.client(alice) as api:
            (held,) = api.get("/api/v1/review").json()["items"]
            assert api.post(f"/api/v1/review/{held['id']}/capture").status_code == 204
        bobs = decided(send(running.smtp_port, _forwarded(mail), mail_from="bob@example.com"))

        with running.client(bob) as api:
            queue = api.get("/api/v1/review").json()["items"]
            seen = api.get(f"/api/v1/messages/{held['id']}").json()
        counted = _sent_counts(running)
    assert queue == []
    assert (seen["outcome"], seen["decision_id"]) == ("capture", bobs)
    assert "CANARY-TEXT" in seen["body_text"]
    assert counted == [("bob@example.com", 1)]


def test_my_capture_of_my_mail_kept_as_metadata_takes_the_text_when_it_is_the_text_kept(
    settings: Settings, tmp_path: Path
) -> None:
    """Bob's mail to Dan came from his mailbox as metadata only (this policy keeps mailbox mail
    so, and keeps every message private to its owners); Alice, in Cc, BCC'd it (a capture,
    with its text); Bob then forwarded it (a capture, the same text). His capture joined
    Alice's message and changed nothing: his copy stayed metadata only, the text he had just
    sent hidden from him. A forward with other text leaves his copy as it was."""
    mailbox = (
        "default_visibility: private\nrules:\n  - id: mailbox-metadata\n    description: Mail"
        " read from a mailbox keeps who and when.\n    when: {channel-in: {channels: [import]}}"
        "\n    outcome: metadata_only\n"
    )
    rules = tmp_path / "mailbox-metadata.yaml"
    rules.write_text((FIXTURES / "plumbing-policy.yaml").read_text().replace("rules:\n", mailbox))
    mail = _bobs_mail("Quote for the pumps", "Dan, here is the quote. CANARY-TEXT\n")
    with run_service(settings.model_copy(update={"policy": rules})) as running:
        _alice, bob = _tokens(running)
        pipeline = running.runtime.pipeline
        imported = pipeline.process(mail.as_bytes(), Envelope("bob@example.com"), Channel.IMPORT)
        assert send(running.smtp_port, mail, mail_from="alice@example.com")[0] == 250
        altered = copy.deepcopy(mail)  # the same headers, other words
        altered.set_content("Dan, here is the quote, edited.\n")
        assert send(running.smtp_port, _forwarded(altered), mail_from="bob@example.com")[0] == 250
        with running.client(bob) as api:
            before = api.get(f"/api/v1/messages/{imported.message_id}").json()
        bobs = decided(send(running.smtp_port, _forwarded(mail), mail_from="bob@example.com"))
        with running.client(bob) as api:
            seen = api.get(f"/api/v1/messages/{imported.message_id}").json()
        counted = _sent_counts(running)
    assert (before["outcome"], before["body_text"]) == ("metadata_only", None)
    assert (seen["outcome"], seen["decision_id"]) == ("capture", bobs)
    assert "CANARY-TEXT" in seen["body_text"]
    assert counted == [("bob@example.com", 1)]
