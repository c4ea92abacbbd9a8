"""Serve: threads, and who on the team knows a contact, through the real listener and API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.db import transaction
from app.models import Contact, Relationship
from app.security import Role
from tests.conftest import Running, add_employee, issue_token
from tests.mail import compose, send


def test_a_reply_joins_the_thread_of_the_message_it_answers(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    first = compose(message_id="<t1@example.com>")
    reply = compose(
        subject="Re: Quote for 20 licences",
        message_id="<t2@example.com>",
        headers={"In-Reply-To": "<t1@example.com>", "References": "<t1@example.com>"},
    )
    other = compose(subject="Another matter", message_id="<t3@example.com>")
    for msg in (first, reply, other):
        assert send(running.smtp_port, msg)[0] == 250

    with running.client(token) as api:
        messages = api.get("/api/v1/messages").json()["items"]
        threads = {m["message_id"]: m["thread_id"] for m in messages}
        thread = api.get(f"/api/v1/threads/{threads['<t1@example.com>']}").json()
        missing = api.get("/api/v1/threads/999")

    assert threads["<t1@example.com>"] == threads["<t2@example.com>"]
    assert threads["<t3@example.com>"] != threads["<t1@example.com>"]
    assert [m["message_id"] for m in thread["messages"]] == ["<t1@example.com>", "<t2@example.com>"]
    assert missing.status_code == 404


def test_a_colleague_cannot_read_a_thread_of_private_mail(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    carol = add_employee(running.runtime.sessions, "carol@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=carol)
    held = compose(to="Bob <bob@customer.example>", message_id="<p1@example.com>")
    assert send(running.smtp_port, held)[0] == 250
    with running.runtime.db.begin() as conn:
        conn.exec_driver_sql("UPDATE messages SET visibility = 'private'")
        thread_id = conn.exec_driver_sql("SELECT thread_id FROM messages").scalar_one()

    with running.client(token) as api:
        assert api.get(f"/api/v1/threads/{thread_id}").status_code == 404


def test_relationships_say_who_knows_a_contact_and_how_well(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com", name="Alice Example")
    carol = add_employee(running.runtime.sessions, "carol@example.com", name="Carol Example")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    carols = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=carol)
    for n in range(3):
        send(running.smtp_port, compose(message_id=f"<a{n}@example.com>"))
    send(
        running.smtp_port,
        compose(sender="Carol <carol@example.com>", message_id="<c1@example.com>"),
        mail_from="carol@example.com",
    )

    with running.client(token) as api:
        bob = api.get("/api/v1/contacts").json()["items"][0]
        known = api.get(f"/api/v1/contacts/{bob['id']}/relationships").json()
        mine = api.get(f"/api/v1/employees/{alice}/contacts").json()
    with running.client(carols) as api:
        snooping = api.get(f"/api/v1/employees/{alice}/contacts")

    assert [(r["employee_email"], r["sent_count"]) for r in known] == [
        ("alice@example.com", 3),
        ("carol@example.com", 1),
    ]
    assert known[0]["strength"] > known[1]["strength"] > 0
    assert [r["contact"]["address"] for r in mine] == ["bob@customer.example"]
    assert snooping.status_code == 404


def test_a_thread_tells_no_time_of_a_colleagues_private_reply(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    add_employee(running.runtime.sessions, "carol@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    first = compose(message_id="<t1@example.com>")
    reply = compose(
        sender="Carol <carol@example.com>",
        subject="Re: Quote for 20 licences",
        message_id="<t2@example.com>",
        headers={"In-Reply-To": "<t1@example.com>", "References": "<t1@example.com>"},
    )
    reply.replace_header("Date", "Fri, 27 Nov 2026 18:30:00 +0000")
    assert send(running.smtp_port, first)[0] == 250
    assert send(running.smtp_port, reply, mail_from="carol@example.com")[0] == 250
    with running.runtime.db.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE messages SET visibility = 'private' WHERE message_id = '<t2@example.com>'"
        )
        thread_id = conn.exec_driver_sql(
            "SELECT thread_id FROM messages WHERE message_id = '<t1@example.com>'"
        ).scalar_one()

    with running.client(token) as api:
        thread = api.get(f"/api/v1/threads/{thread_id}").json()

    # The thread is Alice's too, but Carol's private reply, and so when she wrote it, is not.
    assert [m["message_id"] for m in thread["messages"]] == ["<t1@example.com>"]
    assert thread["last_message_at"] == "2026-11-23T09:00:00Z"


def test_whom_an_employee_knows_starts_with_the_strongest_however_many_there_are(
    running: Running,
) -> None:
    """An employee with years of history knows thousands of people: the answer is cut at
    1000, and it must be the 1000 strongest, not whichever rows the database read first."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    now = datetime.now(UTC)
    with transaction(running.runtime.sessions) as session:
        contacts = [Contact(address=f"c{n}@customer.example") for n in range(1001)]
        session.add_all(contacts)
        session.flush()
        session.add_all(
            Relationship(
                employee_id=alice,
                contact_id=c.id,
                sent_count=1,
                received_count=0,
                first_seen=now - timedelta(days=400),
                last_seen=now - timedelta(days=400),
            )
            for c in contacts[:-1]
        )
        session.add(
            Relationship(
                employee_id=alice,
                contact_id=contacts[-1].id,
                sent_count=20,
                received_count=20,
                first_seen=now - timedelta(days=30),
                last_seen=now,
            )
        )

    with running.client(token) as api:
        known = api.get(f"/api/v1/employees/{alice}/contacts").json()

    assert len(known) == 1000
    assert known[0]["contact"]["address"] == "c1000@customer.example"
    assert known[0]["strength"] > 90
