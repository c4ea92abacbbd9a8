"""A BCC'd message goes through the real listener and comes back out of the real API."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from email import policy
from email.message import EmailMessage

import pytest
import sqlalchemy as sa

from app import server
from app.filing import dedupe_key
from app.models import Contact, DecisionRecord, Message, MessageOwner
from app.security import Role
from app.settings import Settings
from capture.parse import parse_message
from tests.conftest import CAPTURE, Running, add_employee, issue_token, run_service, write_lock
from tests.mail import UNSTORABLE, compose, decided, send
from tests.web import sign_in


@pytest.fixture
def alice(running: Running) -> tuple[int, str]:
    employee_id = add_employee(running.runtime.sessions, "alice@example.com", name="Alice")
    return employee_id, issue_token(
        running.runtime.sessions, Role.EMPLOYEE, employee_id=employee_id
    )


def test_bcc_message_is_filed_against_contact_company_and_employee(
    running: Running, alice: tuple[int, str]
) -> None:
    alice_id, token = alice

    code, reply = send(running.smtp_port, compose())

    assert code == 250, reply
    with running.client(token) as api:
        page = api.get("/api/v1/messages").json()
    assert page["next_cursor"] is None
    (message,) = page["items"]
    assert message["subject"] == "Quote for 20 licences"
    assert message["outcome"] == "capture"
    (contact,) = message["contacts"]
    assert contact["address"] == "bob@customer.example"
    assert contact["name"] == "Bob Builder"
    assert contact["company"]["domain"] == "customer.example"
    (owner,) = message["owners"]
    assert (owner["employee_id"], owner["email"], owner["channel"]) == (
        alice_id,
        "alice@example.com",
        "bcc",
    )
    roles = {(p["role"], p["address"]) for p in message["participants"]}
    assert roles == {("from", "alice@example.com"), ("to", "bob@customer.example")}


def test_the_same_message_sent_twice_is_filed_once(
    running: Running, alice: tuple[int, str]
) -> None:
    msg = compose()
    first = send(running.smtp_port, msg)
    second = send(running.smtp_port, msg)

    assert first[0] == second[0] == 250
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(MessageOwner)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 1


def test_two_employees_bccing_one_mail_make_one_message_with_two_owners(
    running: Running, alice: tuple[int, str]
) -> None:
    add_employee(running.runtime.sessions, "carol@example.com")
    msg = compose(to="Bob <bob@customer.example>, Carol <carol@example.com>")

    assert send(running.smtp_port, msg)[0] == 250
    assert send(running.smtp_port, msg, mail_from="carol@example.com")[0] == 250

    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
        owners = session.scalars(sa.select(MessageOwner.channel)).all()
        assert len(owners) == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 1


def test_each_owner_of_shared_mail_is_shown_the_decision_that_filed_their_own_copy(
    running: Running, alice: tuple[int, str]
) -> None:
    """The same mail from Alice and from Carol is one message, decided for each of them
    (their own rules, policy version and employee id), but the message named Alice's
    decision alone: Carol's captures explained her copy with a decision taken for Alice.
    Each owner is shown the decision behind their own copy, in the API and on the page."""
    _, alice_token = alice
    carol = add_employee(running.runtime.sessions, "carol@example.com")
    carol_token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=carol)
    msg = compose(to="Bob <bob@customer.example>, Carol <carol@example.com>")

    alices = decided(send(running.smtp_port, msg))
    carols = decided(send(running.smtp_port, msg, mail_from="carol@example.com"))

    with running.client(alice_token) as api:
        (for_alice,) = api.get("/api/v1/messages").json()["items"]
    with running.client(carol_token) as api:
        (for_carol,) = api.get("/api/v1/messages").json()["items"]
        one = api.get(f"/api/v1/messages/{for_carol['id']}").json()
    with sign_in(running, carol) as page:
        shown = page.get(f"/mail/messages/{for_carol['id']}").text
    assert for_alice["id"] == for_carol["id"] and alices != carols
    assert (for_alice["decision_id"], for_carol["decision_id"]) == (alices, carols)
    assert one["decision_id"] == carols
    assert f"decision {carols}<" in shown


def test_a_look_alike_of_a_colleagues_message_does_not_make_its_sender_an_owner(
    running: Running, alice: tuple[int, str]
) -> None:
    """A subject-only capture shows colleagues its Message-ID, sender, date and subject: all
    that the same-mail key is made of. A copy with those headers and another text is filed
    apart, and Alice's text stays hers; a copy with her very text joins hers (it proves
    nothing Carol did not have)."""
    alice_id, alice_token = alice
    carol = add_employee(running.runtime.sessions, "carol@example.com")
    carol_token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=carol)
    original = compose(body="Our floor price for you is 41k.\n")
    assert send(running.smtp_port, original)[0] == 250
    with running.client(alice_token) as api:
        (mine,) = api.get("/api/v1/messages").json()["items"]
        shown = {"visibility": "subject_only"}
        assert api.patch(f"/api/v1/messages/{mine['id']}", json=shown).status_code == 200
    with running.client(carol_token) as api:
        seen = api.get(f"/api/v1/messages/{mine['id']}").json()
    assert seen["body_text"] is None

    look_alike = compose(body="Anything at all.\n")
    for name in ("Message-ID", "Date", "Subject", "From"):
        assert look_alike[name] == original[name]  # all that Carol was shown
    assert send(running.smtp_port, look_alike, mail_from="carol@example.com")[0] == 250

    with running.client(carol_token) as api:
        assert api.get(f"/api/v1/messages/{mine['id']}").json()["body_text"] is None
        items = api.get("/api/v1/messages").json()["items"]
    (hers,) = [m for m in items if m["id"] != mine["id"]]
    assert hers["body_text"] == "Anything at all.\n"
    with running.runtime.sessions() as session:
        owners = session.scalars(
            sa.select(MessageOwner.employee_id).where(MessageOwner.message_id == mine["id"])
        ).all()
    assert owners == [alice_id]

    # The very same text from Carol (she was sent it) joins Alice's message.
    assert send(running.smtp_port, original, mail_from="carol@example.com")[0] == 250
    with running.runtime.sessions() as session:
        owners = session.scalars(
            sa.select(MessageOwner.employee_id).where(MessageOwner.message_id == mine["id"])
        ).all()
    assert sorted(owners) == sorted([alice_id, carol])


def test_the_same_mail_key_is_keyed_so_no_subject_can_be_tested_against_it(
    running: Running, alice: tuple[int, str]
) -> None:
    """A message kept as metadata keeps its Message-ID, sender and date, not its subject: an
    unkeyed digest of the four would let whoever reads the database test guessed subjects."""
    raw = compose().as_bytes()
    assert send(running.smtp_port, compose())[0] == 250
    with running.runtime.sessions() as session:
        stored = session.scalar(sa.select(Message.dedupe_key))
    basis = (
        "mid:<quote-1@example.com>\nalice@example.com\n2026-11-23T09:00:00+00:00\n"
        "Quote for 20 licences"
    )
    assert stored != hashlib.sha256(basis.encode()).hexdigest()
    assert stored == dedupe_key(parse_message(raw), running.runtime.pipeline.secret)


def test_submitter_who_is_not_an_employee_is_refused_and_recorded(running: Running) -> None:
    code, reply = send(
        running.smtp_port, compose(sender="mallory@evil.example"), mail_from="mallory@evil.example"
    )

    assert code == 550
    assert reply.startswith(b"5.7.1")
    with running.runtime.sessions() as session:
        (record,) = session.scalars(sa.select(DecisionRecord)).all()
        assert record.outcome == "reject"
        assert record.rules == ["submitter-not-employee"]
        assert record.employee_id is None
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


@pytest.mark.parametrize(
    "capture", ["capture@mailroom.xn--bcher-kva.example", "capture@mailroom.bücher.example"]
)
def test_an_envelope_in_unicode_names_the_employee_and_capture_address_mail_spells_in_ascii(
    settings: Settings, capture: str
) -> None:
    # SMTPUTF8 lets a client write a domain as people read it; the employee list, the capture
    # addresses (however configured) and every parsed header spell it as mail does (IDNA).
    configured = Settings(**{**settings.model_dump(), "capture_addresses": capture})
    with run_service(configured) as running:
        anna = add_employee(running.runtime.sessions, "anna@xn--bcher-kva.example.com")
        msg = compose(sender="Anna <anna@bücher.example.com>", to="Bob <bob@customer.example>")
        raw = msg.as_bytes(policy=policy.SMTPUTF8)
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
            client.ehlo("client.example.com")
            client.mail("Anna@Bücher.example.com", ["SMTPUTF8"])
            recipient = client.rcpt("capture@mailroom.bücher.example")
            code, reply = client.data(raw)

        assert recipient[0] == 250
        assert code == 250, reply
        with running.runtime.sessions() as session:
            (record,) = session.scalars(sa.select(DecisionRecord)).all()
        assert (record.outcome, record.employee_id) == ("capture", anna)


def test_an_organization_domain_configured_in_unicode_keeps_mail_between_colleagues_internal(
    settings: Settings,
) -> None:
    # Parsed addresses spell the domain in IDNA A-labels: configured as people read it, the
    # colleague was an outsider, the mail "external" and captured, and the colleague a contact.
    configured = Settings(**{**settings.model_dump(), "org_domains": "Bücher.example"})
    with run_service(configured) as running:
        add_employee(running.runtime.sessions, "anna@xn--bcher-kva.example")
        msg = compose(sender="Anna <anna@bücher.example>", to="Carl <carl@bücher.example>")
        raw = msg.as_bytes(policy=policy.SMTPUTF8)

        code, reply = send(running.smtp_port, raw, mail_from="anna@xn--bcher-kva.example")

        assert code == 250, reply
        with running.runtime.sessions() as session:
            (record,) = session.scalars(sa.select(DecisionRecord)).all()
            assert session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0
        assert (record.outcome, record.rules) == ("drop", ["internal-only"])


def test_mail_for_an_address_that_is_not_a_capture_address_is_refused(running: Running) -> None:
    code, reply = send(running.smtp_port, compose(), rcpt="someone@mailroom.example.com")

    assert code == 550
    assert reply.startswith(b"5.1.1")


def test_mailing_list_mail_is_dropped_and_only_a_decision_remains(
    running: Running, alice: tuple[int, str]
) -> None:
    msg = compose(headers={"List-Id": "<news.customer.example>", "List-Unsubscribe": "<x@y.z>"})

    assert send(running.smtp_port, msg)[0] == 250

    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0
        (record,) = session.scalars(sa.select(DecisionRecord)).all()
    assert record.outcome == "drop"
    assert record.rules == ["bulk-list-mail"]
    assert record.policy_sha256 == running.runtime.pipeline.engine.policy.sha256


def test_api_without_a_token_answers_401_problem_json(running: Running) -> None:
    with running.client(None) as api:
        response = api.get("/api/v1/messages")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


def test_api_with_an_unknown_token_answers_401(running: Running) -> None:
    with running.client("mr_not-a-real-token") as api:
        assert api.get("/api/v1/contacts").status_code == 401


def test_the_api_answers_a_kept_alive_connection_without_waiting_for_a_delayed_ack(
    running: Running,
) -> None:
    """socket.create_server leaves the listening socket's protocol 0, and asyncio turns Nagle's
    algorithm off only on connections whose socket says TCP: every answer after the first on a
    kept-alive connection waited 40 ms for the client's delayed ACK."""
    assert running.service.api_server is not None
    with running.client(None) as api:
        assert api.get("/healthz").status_code == 200
        connections = running.service.api_server.server_state.connections
        sockets = [c.transport.get_extra_info("socket") for c in connections]
        assert sockets
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)


def test_a_stop_answers_the_api_request_in_hand_before_it_closes_the_database(
    settings: Settings,
) -> None:
    """A stop waits for the request in hand (its work in a thread, held up by the database)
    and closes the database only after the answer."""
    # No job runs while the database is held (a stop waits for those too), once each has run.
    quiet = settings.model_copy(update={"webhook_interval": 3600})
    with run_service(quiet) as running, ThreadPoolExecutor(1) as pool:
        admin = issue_token(running.runtime.sessions, Role.ADMIN)
        registry = running.runtime.metrics.registry
        for job in ("retention-purge", "webhook-delivery"):
            labels = {"job": job, "result": "ran"}
            while not registry.get_sample_value("mailroom_job_runs_total", labels):
                time.sleep(0.005)
        api_server = running.service.api_server
        assert api_server is not None
        with running.client(admin) as api:
            with write_lock(running, table="employees"):
                answer = pool.submit(api.post, "/api/v1/employees", json={"email": "e@example.com"})
                while not api_server.server_state.tasks:
                    time.sleep(0.005)
                stopping = asyncio.run_coroutine_threadsafe(running.service.stop(), running.loop)
                time.sleep(0.2)
                still_stopping = not stopping.done()
            assert answer.result(timeout=30).status_code == 201
        stopping.result(timeout=30)
    assert still_stopping


def test_a_stop_waits_for_a_request_that_never_ends_only_so_long(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sends a request's headers and never its body held every stop (uvicorn
    waits for requests in hand without a limit): the process ran until killed."""
    monkeypatch.setattr(server, "STOP_GRACE_SECONDS", 0.2)
    with (
        run_service(settings) as running,
        socket.create_connection(("127.0.0.1", running.service.api_port)) as stalled,
    ):
        stalled.sendall(
            b"POST /api/v1/employees HTTP/1.1\r\nHost: mailroom\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        api_server = running.service.api_server
        assert api_server is not None
        while not api_server.server_state.tasks:
            time.sleep(0.005)
        stopping = asyncio.run_coroutine_threadsafe(running.service.stop(), running.loop)
        stopping.result(timeout=10)


def test_messages_page_through_with_a_cursor(running: Running, alice: tuple[int, str]) -> None:
    _, token = alice
    for n in range(5):
        msg = compose(subject=f"Order {n}", message_id=f"<order-{n}@example.com>")
        assert send(running.smtp_port, msg)[0] == 250

    seen: list[str] = []
    cursor = None
    with running.client(token) as api:
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = api.get("/api/v1/messages", params=params).json()
            seen += [m["subject"] for m in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == [f"Order {n}" for n in reversed(range(5))]


def test_contacts_and_companies_are_listed(running: Running, alice: tuple[int, str]) -> None:
    _, token = alice
    assert send(running.smtp_port, compose())[0] == 250

    with running.client(token) as api:
        contacts = api.get("/api/v1/contacts").json()["items"]
        companies = api.get("/api/v1/companies").json()["items"]
        one = api.get(f"/api/v1/contacts/{contacts[0]['id']}").json()
        missing = api.get("/api/v1/contacts/999999")
    assert [c["address"] for c in contacts] == ["bob@customer.example"]
    assert [c["domain"] for c in companies] == ["customer.example"]
    assert one["company"]["domain"] == "customer.example"
    assert missing.status_code == 404


def test_page_size_over_100_is_a_clear_error(running: Running, alice: tuple[int, str]) -> None:
    _, token = alice
    with running.client(token) as api:
        response = api.get("/api/v1/messages", params={"limit": 1000})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_mail_forwarded_to_the_capture_address_is_channel_forward(
    running: Running, alice: tuple[int, str]
) -> None:
    forward = compose(
        to="capture@mailroom.example.com",
        subject="Fwd: Quote for 20 licences",
        body="FYI\n\n---------- Forwarded message ---------\nFrom: Bob <bob@customer.example>\n"
        "Subject: Quote for 20 licences\n\nCan you send the quote?\n",
        message_id="<fwd-1@example.com>",
    )
    bcc = compose(message_id="<bcc-1@example.com>")

    assert send(running.smtp_port, forward)[0] == 250
    assert send(running.smtp_port, bcc)[0] == 250

    with running.runtime.sessions() as session:
        channels = session.scalars(sa.select(DecisionRecord.channel).order_by(DecisionRecord.id))
        assert list(channels) == ["forward", "bcc"]


def test_a_forwarded_mail_is_filed_against_its_original_sender_not_the_employee(
    running: Running, alice: tuple[int, str]
) -> None:
    _, token = alice
    forward = compose(
        to="capture@mailroom.example.com",
        subject="Fwd: Delivery dates",
        body="Please file this.\n\n---------- Forwarded message ---------\n"
        "From: Dana Seller <dana@supplier.example>\nDate: Mon, 23 Nov 2026 at 08:00\n"
        "Subject: Delivery dates\nTo: Alice Example <alice@example.com>\n\n"
        "We can deliver the 20 units on 1 December.\n",
        message_id="<fwd-dana@example.com>",
    )

    assert send(running.smtp_port, forward)[0] == 250

    with running.client(token) as api:
        (message,) = api.get("/api/v1/messages").json()["items"]
    assert [c["address"] for c in message["contacts"]] == ["dana@supplier.example"]
    assert message["subject"] == "Delivery dates"
    assert message["direction"] == "inbound"
    assert [o["channel"] for o in message["owners"]] == ["forward"]


def _forward_of_bobs_mail(subject: str, *, attached: bool) -> EmailMessage:
    """Alice's forward of Bob's mail to the capture address: inline, or as an attachment."""
    bobs = compose(
        sender="Bob <bob@customer.example>",
        to="Alice Example <alice@example.com>",
        subject="Dinner on Saturday",
        body="Shall we say 8pm at the usual place?\n",
        message_id="<dinner@customer.example>",
    )
    if attached:
        forward = compose(to=CAPTURE, subject=subject, body="For the file.\n")
        forward.add_attachment(bobs)
        return forward
    inline = "---------- Forwarded message ---------\nFrom: Bob <bob@customer.example>\n"
    body = f"For the file.\n\n{inline}Subject: Dinner on Saturday\n\n{bobs.get_content()}"
    return compose(to=CAPTURE, subject=subject, body=body, message_id="<fwd-private@example.com>")


@pytest.mark.parametrize(
    ("subject", "sensitivity", "attached"),
    [("[private] Fwd: Dinner on Saturday", None, False), ("Fwd: Dinner", "Private", True)],
)
def test_a_forward_the_employee_marked_private_is_not_kept(
    running: Running,
    alice: tuple[int, str],
    subject: str,
    sensitivity: str | None,
    attached: bool,
) -> None:
    """The mark is the employee's own, on the forward they send, not on the mail it carries:
    `[private]` in its subject, or Outlook's Private on it. Before, only the forwarded mail's
    subject (and, for an attachment, its headers) were read: these were captured against Bob."""
    forward = _forward_of_bobs_mail(subject, attached=attached)
    if sensitivity is not None:
        forward["Sensitivity"] = sensitivity

    assert send(running.smtp_port, forward)[0] == 250

    with running.runtime.sessions() as session:
        (record,) = session.scalars(sa.select(DecisionRecord)).all()
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
    assert (record.channel, record.outcome) == ("forward", "drop")
    assert record.rules == ["marked-private"]


def test_a_message_without_message_id_is_captured_and_its_retry_is_not_duplicated(
    running: Running, alice: tuple[int, str]
) -> None:
    msg = compose(message_id=None)

    assert send(running.smtp_port, msg)[0] == 250
    assert send(running.smtp_port, msg)[0] == 250

    with running.runtime.sessions() as session:
        (stored,) = session.scalars(sa.select(Message)).all()
    assert stored.message_id is None
    assert stored.outcome == "capture"


@pytest.mark.parametrize("kind", UNSTORABLE)
def test_a_value_no_database_stores_as_written_is_tamed_and_the_message_filed(
    running: Running, alice: tuple[int, str], kind: str
) -> None:
    # A 451 here would be for ever: the sender's server retries for days, failing alike.
    code, reply = send(running.smtp_port, UNSTORABLE[kind])

    assert code == 250, reply
    with running.runtime.sessions() as session:
        (stored,) = session.scalars(sa.select(Message)).all()
    assert stored.outcome == "capture"
