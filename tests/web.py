"""Signing in to the pages, and mail to look at, for the page tests (httpx and Chromium)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from app.db import transaction
from app.models import Message
from app.security import Role
from app.web.auth import create_login_link
from capture.pipeline import Envelope
from policies.model import Channel
from tests.conftest import Running, add_employee
from tests.mail import compose

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def login_link(running: Running, employee_id: int, role: Role = Role.EMPLOYEE) -> str:
    with transaction(running.runtime.sessions) as session:
        token = create_login_link(session, employee_id, role, datetime.now(UTC))
    return f"{running.api_url}/sign-in/link/{token}"


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@contextmanager
def sign_in(
    running: Running, employee_id: int, role: Role = Role.EMPLOYEE
) -> Iterator[httpx.Client]:
    """A browser-like client signed in through a one-time link, as a person would."""
    with running.client(None) as client:
        link = client.get(login_link(running, employee_id, role))
        token = link.url.path.rsplit("/", 1)[1]
        done = client.post("/sign-in/link", data={"csrf": csrf_of(link), "token": token})
        assert done.status_code == 303, done.text
        yield client


@dataclass(frozen=True)
class Mail:
    """Alice's and Carol's mail of every kind, with the texts a page must (not) show."""

    alice: int
    carol: int
    held: int
    captured: int
    carol_private: int
    carol_shared: int


def file_mail(running: Running) -> Mail:
    """Real messages through the real pipeline: a held note, captures, a dropped internal mail."""
    sessions = running.runtime.sessions
    alice = add_employee(sessions, "alice@example.com", name="Alice Example")
    carol = add_employee(sessions, "carol@example.com", name="Carol Colleague")
    pipeline = running.runtime.pipeline

    def process(
        sender: str,
        *,
        message_id: str,
        to: str = "Bob Builder <bob@customer.example>",
        subject: str = "Quote for 20 licences",
        body: str = "Hi Bob,\n\nhere is the quote.\n",
    ) -> int | None:
        msg = compose(sender=sender, to=to, subject=subject, body=body, message_id=message_id)
        return pipeline.process(msg.as_bytes(), Envelope(sender), Channel.BCC).message_id

    held = process(
        "alice@example.com",
        to="Alice <alice@example.com>",
        subject="Note to self: quote follow-up",
        message_id="<held@example.com>",
    )
    captured = process("alice@example.com", message_id="<captured@example.com>")
    process(
        "alice@example.com",
        to="Carol <carol@example.com>",
        subject="DROPPED-CANARY lunch on friday",
        body="DROPPED-CANARY body text\n",
        message_id="<dropped@example.com>",
    )
    carol_private = process(
        "carol@example.com",
        to="Dan <dan@prospect.example>",
        subject="CAROL-PRIVATE pricing",
        message_id="<carol-private@example.com>",
    )
    carol_shared = process(
        "carol@example.com",
        to="Erin <erin@partner.example>",
        subject="Carol's shared note",
        message_id="<carol-shared@example.com>",
    )
    ids = (held, captured, carol_private, carol_shared)
    assert all(i is not None for i in ids)
    held_id, captured_id, private_id, shared_id = (int(i or 0) for i in ids)
    with transaction(sessions) as session:
        session.execute(
            sa.update(Message).where(Message.id == private_id).values(visibility="private")
        )
        session.execute(
            sa.update(Message).where(Message.id == shared_id).values(visibility="shared")
        )
    return Mail(alice, carol, held_id, captured_id, private_id, shared_id)
