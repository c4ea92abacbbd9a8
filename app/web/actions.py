"""Serve: what an employee's pages read and change, kept thin over the tables.

Each function takes the acting employee's id and touches only that employee's rows, so a page
cannot reach a colleague's mail by guessing an id. The review queue, visibility and settings
services of the roles work can replace these one by one without the pages changing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import filing
from app.models import (
    DecisionRecord,
    Employee,
    Message,
    MessageOwner,
    Participant,
    PersonalContact,
    Suppression,
)
from capture.parse import Address
from policies.model import Outcome, Visibility
from policies.observe import address_token, is_internal

KEPT = (Outcome.CAPTURE.value, Outcome.METADATA_ONLY.value)
DROPPED = (Outcome.DROP.value, Outcome.REJECT.value)
WIDTH = (Visibility.PRIVATE.value, Visibility.SUBJECT_ONLY.value, Visibility.SHARED.value)


@dataclass(frozen=True)
class Dropped:
    """All that is left of a dropped message: when, and which rule."""

    at: datetime
    outcome: str
    rule: str


def _own(employee_id: int) -> sa.ColumnElement[bool]:
    return sa.exists().where(
        MessageOwner.message_id == Message.id, MessageOwner.employee_id == employee_id
    )


def own_message(session: Session, employee_id: int, message_id: int) -> Message | None:
    """One of this employee's own messages, or None (also for a colleague's)."""
    return session.scalar(sa.select(Message).where(Message.id == message_id, _own(employee_id)))


def captures(session: Session, employee_id: int, *, limit: int = 50) -> list[Message]:
    query = (
        sa.select(Message)
        .where(_own(employee_id), Message.outcome.in_(KEPT))
        .order_by(Message.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def held(session: Session, employee_id: int) -> list[Message]:
    query = (
        sa.select(Message)
        .where(_own(employee_id), Message.outcome == Outcome.HOLD_FOR_REVIEW.value)
        .order_by(Message.held_until)
    )
    return list(session.scalars(query))


def dropped(session: Session, employee_id: int, *, limit: int = 50) -> list[Dropped]:
    query = (
        sa.select(DecisionRecord.created_at, DecisionRecord.outcome, DecisionRecord.rules)
        .where(DecisionRecord.employee_id == employee_id, DecisionRecord.outcome.in_(DROPPED))
        .order_by(DecisionRecord.id.desc())
        .limit(limit)
    )
    return [
        Dropped(at, outcome, str(rules[0]) if rules else "policy default")
        for at, outcome, rules in session.execute(query)
    ]


class NotAllowedError(Exception):
    """The change is refused for a reason the employee should read."""


def set_visibility(
    session: Session, employee_id: int, message_id: int, visibility: Visibility
) -> bool:
    """Change who may see one of my captures; False if it is not mine or not captured.

    Showing it to more people needs me to be its only owner: a colleague who filed the same
    mail did not agree to share it."""
    message = session.scalar(
        sa.select(Message).where(
            Message.id == message_id, _own(employee_id), Message.outcome.in_(KEPT)
        )
    )
    if message is None:
        return False
    widening = WIDTH.index(visibility.value) > WIDTH.index(message.visibility)
    if widening and _other_owners(session, employee_id, message_id):
        raise NotAllowedError("a colleague filed this message too, so it is not yours to share")
    message.visibility = visibility.value
    return True


@dataclass(frozen=True)
class Review:
    """Who reviews, and what capturing needs: the consent lists' key, the company's domains,
    and the policy's default visibility for captures."""

    employee_id: int
    secret: bytes
    org_domains: frozenset[str]
    visibility: Visibility
    now: datetime


def capture_held(session: Session, message_id: int, at: Review) -> bool:
    """I say a held message is business: it is filed as a capture, with its contacts.

    False if it is not mine or not held; NotAllowedError if a consent guardrail now forbids it
    (someone objected or was erased, or is on my personal-contacts list since it was held)."""
    message = session.scalar(
        sa.select(Message).where(
            Message.id == message_id,
            _own(at.employee_id),
            Message.outcome == Outcome.HOLD_FOR_REVIEW.value,
        )
    )
    if message is None:
        return False
    participants = list(
        session.scalars(sa.select(Participant).where(Participant.message_id == message_id))
    )
    _check_consent(session, [p.address for p in participants], at)
    conn = session.connection()
    sender = next((p for p in participants if p.role == "from"), None)
    outbound = sender is not None and sender.employee_id == at.employee_id
    for p in participants:
        if is_internal(p.address, at.org_domains):
            continue
        p.contact_id = filing._contact_id(conn, Address(p.address, p.name), at.now)
        if outbound or p is sender:
            seen = message.sent_at or at.now
            filing._bump_relationship(
                conn,
                {
                    "employee_id": at.employee_id,
                    "contact_id": p.contact_id,
                    "sent_count": int(outbound),
                    "received_count": int(p is sender),
                    "first_seen": seen,
                    "last_seen": seen,
                },
            )
    with_text = message.subject is not None or message.body_text is not None
    message.outcome = Outcome.CAPTURE.value if with_text else Outcome.METADATA_ONLY.value
    message.visibility, message.held_until = at.visibility.value, None
    return True


def _check_consent(session: Session, addresses: list[str], at: Review) -> None:
    tokens = [address_token(at.secret, a) for a in addresses]
    if session.scalar(
        sa.select(Suppression.address_token).where(Suppression.address_token.in_(tokens)).limit(1)
    ):
        raise NotAllowedError("someone in it objected or had their data erased; discard it")
    personal = sa.select(PersonalContact.id).where(
        PersonalContact.employee_id == at.employee_id, PersonalContact.address_token.in_(tokens)
    )
    if session.scalar(personal.limit(1)):
        raise NotAllowedError("someone in it is on your personal-contacts list; discard it")


def discard_held(session: Session, employee_id: int, message_id: int) -> bool:
    """I say a held message is personal: my copy goes, and the message with it unless a
    colleague filed it too. Its content-free decision stays."""
    mine = session.execute(
        sa.delete(MessageOwner).where(
            MessageOwner.employee_id == employee_id,
            MessageOwner.message_id.in_(
                sa.select(Message.id).where(
                    Message.id == message_id, Message.outcome == Outcome.HOLD_FOR_REVIEW.value
                )
            ),
        )
    )
    if not mine.rowcount:  # type: ignore[attr-defined]
        return False
    if not _other_owners(session, employee_id, message_id):
        session.execute(sa.delete(Message).where(Message.id == message_id))
    return True


def _other_owners(session: Session, employee_id: int, message_id: int) -> int:
    query = sa.select(sa.func.count()).where(
        MessageOwner.message_id == message_id, MessageOwner.employee_id != employee_id
    )
    return int(session.scalar(query) or 0)


def set_capture_paused(session: Session, employee_id: int, *, paused: bool) -> None:
    session.execute(
        sa.update(Employee).where(Employee.id == employee_id).values(capture_paused=paused)
    )


def personal_contacts(session: Session, employee_id: int) -> list[PersonalContact]:
    """My personal contacts: only keyed digests are stored, so they are listed by date."""
    query = (
        sa.select(PersonalContact)
        .where(PersonalContact.employee_id == employee_id)
        .order_by(PersonalContact.id.desc())
    )
    return list(session.scalars(query))


def add_personal_contact(
    session: Session, employee_id: int, address: str, secret: bytes
) -> PersonalContact:
    token = address_token(secret, address)
    row = session.scalar(
        sa.select(PersonalContact).where(
            PersonalContact.employee_id == employee_id, PersonalContact.address_token == token
        )
    )
    if row is None:
        row = PersonalContact(employee_id=employee_id, address_token=token)
        session.add(row)
        session.flush()
    return row


def remove_personal_contact(session: Session, employee_id: int, contact_id: int) -> bool:
    removed = session.execute(
        sa.delete(PersonalContact).where(
            PersonalContact.id == contact_id, PersonalContact.employee_id == employee_id
        )
    )
    return bool(removed.rowcount)  # type: ignore[attr-defined]
