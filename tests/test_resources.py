"""Finding things through the API: contacts by text, company and change time; a company with
its contacts; messages by contact, company, owner, thread and date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from app.models import Employee, Message
from app.security import Role
from tests.conftest import Running, add_employee, issue_token
from tests.mail import compose, send


@dataclass(frozen=True)
class Filed:
    alice: str  # tokens
    carol: str
    integration: str
    quote: int  # message ids
    offer: int
    follow_up: int
    carols: int


def _dated(message: EmailMessage, date: str) -> EmailMessage:
    del message["Date"]
    message["Date"] = date
    return message


def _id(running: Running, message: EmailMessage, sender: str = "alice@example.com") -> int:
    code, reply = send(running.smtp_port, message, mail_from=sender)
    assert code == 250, reply
    with running.runtime.sessions() as session:
        found = session.scalar(
            sa.select(Message.id).where(Message.message_id == message["Message-ID"])
        )
    assert found is not None
    return found


@pytest.fixture
def filed(running: Running) -> Filed:
    sessions = running.runtime.sessions
    alice = add_employee(sessions, "alice@example.com")
    carol = add_employee(sessions, "carol@example.com")
    quote = compose(subject="Quote", message_id="<quote@example.com>")
    offer = compose(
        to="Dave Ray <dave@other-corp.example>", subject="Offer", message_id="<offer@example.com>"
    )
    follow_up = compose(
        subject="Re: Quote",
        message_id="<follow-up@example.com>",
        headers={"In-Reply-To": "<quote@example.com>", "References": "<quote@example.com>"},
    )
    carols = compose(
        sender="Carol <carol@example.com>", subject="Visit", message_id="<visit@example.com>"
    )
    return Filed(
        alice=issue_token(sessions, Role.EMPLOYEE, employee_id=alice),
        carol=issue_token(sessions, Role.EMPLOYEE, employee_id=carol),
        integration=issue_token(sessions, Role.INTEGRATION, scopes=("contacts:read",)),
        quote=_id(running, _dated(quote, "Sun, 01 Nov 2026 09:00:00 +0000")),
        offer=_id(running, _dated(offer, "Tue, 10 Nov 2026 09:00:00 +0000")),
        follow_up=_id(running, _dated(follow_up, "Fri, 20 Nov 2026 09:00:00 +0000")),
        carols=_id(running, carols, sender="carol@example.com"),
    )


def _items(running: Running, token: str, path: str, **params: Any) -> list[dict[str, Any]]:
    with running.client(token) as api:
        response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_contacts_are_found_by_name_address_or_company(running: Running, filed: Filed) -> None:
    def found(**params: Any) -> list[str]:
        return [
            c["address"] for c in _items(running, filed.integration, "/api/v1/contacts", **params)
        ]

    assert found(q="BUILDER") == ["bob@customer.example"]  # the display name, any case
    assert found(q="dave@") == ["dave@other-corp.example"]
    assert found(q="other-corp") == ["dave@other-corp.example"]  # the company's domain
    assert found(q="%") == [] and found(q="_") == []  # wildcards are only characters
    assert sorted(found()) == ["bob@customer.example", "dave@other-corp.example"]


@pytest.mark.parametrize(
    "q", ["Élodie", "ÉLODIE", "élodie", "Иван", "ИВАН", "иван", "ØRJAN", "ØRSTED"]
)
def test_contacts_are_found_by_a_name_in_any_alphabet_in_any_case(running: Running, q: str) -> None:
    """SQLite's own lower() folds ASCII alone: a name written with an accented or Cyrillic
    capital was found by none of its spellings, not even the one it is written in."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    for to, mid in (
        ("Élodie Durand <elodie@client.example>", "<e@x>"),
        ("Иван Петров <ivan@client.example>", "<i@x>"),
        ("Ørjan Berg <orjan@ørsted.example>", "<o@x>"),
    ):
        assert send(running.smtp_port, compose(to=to, message_id=mid))[0] == 250

    contacts = _items(running, token, "/api/v1/contacts", q=q)
    companies = _items(running, token, "/api/v1/companies", q=q)

    if q == "ØRSTED":  # the company's name, as its domain spells it
        assert [c["domain"] for c in companies] == ["xn--rsted-uua.example"], companies
        assert [c["address"] for c in contacts] == ["orjan@xn--rsted-uua.example"]
    else:
        assert len(contacts) == 1 and q.lower() in contacts[0]["name"].lower(), contacts


def test_contacts_changed_since_and_of_one_company(running: Running, filed: Filed) -> None:
    now = datetime.now(UTC)
    bob = _items(running, filed.integration, "/api/v1/contacts", q="bob")[0]
    company = bob["company"]["id"]

    recent = _items(
        running,
        filed.alice,
        "/api/v1/contacts",
        updated_since=(now - timedelta(hours=1)).isoformat(),
    )
    future = _items(
        running,
        filed.alice,
        "/api/v1/contacts",
        updated_since=(now + timedelta(hours=1)).isoformat(),
    )
    of_company = _items(running, filed.alice, "/api/v1/contacts", company_id=company)
    with running.client(filed.integration) as api:
        whole = api.get(f"/api/v1/companies/{company}").json()
        missing = api.get("/api/v1/companies/999999")

    assert len(recent) == 2 and future == []
    assert [c["address"] for c in of_company] == ["bob@customer.example"]
    assert (whole["domain"], whole["contact_count"]) == ("customer.example", 1)
    assert [c["address"] for c in whole["contacts"]] == ["bob@customer.example"]
    assert missing.status_code == 404


def test_messages_by_contact_company_thread_owner_and_date(running: Running, filed: Filed) -> None:
    bob = _items(running, filed.alice, "/api/v1/contacts", q="bob")[0]
    dave = _items(running, filed.alice, "/api/v1/contacts", q="dave")[0]

    def ids(**params: Any) -> list[int]:
        return [m["id"] for m in _items(running, filed.alice, "/api/v1/messages", **params)]

    thread = next(
        m for m in _items(running, filed.alice, "/api/v1/messages") if m["id"] == filed.quote
    )
    assert ids(contact_id=bob["id"]) == [filed.carols, filed.follow_up, filed.quote]
    assert ids(company_id=dave["company"]["id"]) == [filed.offer]
    assert ids(thread_id=thread["thread_id"]) == [filed.follow_up, filed.quote]
    assert ids(since="2026-11-05T00:00:00Z", until="2026-11-15T00:00:00Z") == [filed.offer]
    assert ids(since="2026-11-05T00:00:00") == [filed.carols, filed.follow_up, filed.offer]  # UTC
    assert ids(employee_id=_employee(running, "carol@example.com")) == [filed.carols]


def test_filters_never_widen_what_a_colleague_sees(running: Running, filed: Filed) -> None:
    with running.client(filed.alice) as api:
        lowered = api.patch(f"/api/v1/messages/{filed.quote}", json={"visibility": "private"})
    assert lowered.status_code == 200
    alice_id = _employee(running, "alice@example.com")

    seen_by_carol = [
        m["id"] for m in _items(running, filed.carol, "/api/v1/messages", employee_id=alice_id)
    ]

    assert filed.quote not in seen_by_carol and filed.offer in seen_by_carol


def test_bad_filters_are_refused_with_422(running: Running, filed: Filed) -> None:
    with running.client(filed.alice) as api:
        answers = [
            api.get("/api/v1/contacts", params={"q": "x" * 201}).status_code,
            api.get("/api/v1/contacts", params={"updated_since": "yesterday"}).status_code,
            api.get("/api/v1/messages", params={"contact_id": "9" * 30}).status_code,
            api.get("/api/v1/messages", params={"since": "not a date"}).status_code,
        ]
    assert answers == [422, 422, 422, 422]


def _employee(running: Running, email: str) -> int:
    with running.runtime.sessions() as session:
        found = session.scalar(sa.select(Employee.id).where(Employee.email == email))
    assert found is not None
    return found
