"""Serve: what an employee's pages read and change, kept thin over the tables.

Each function takes the acting employee's id and touches only that employee's rows, so a page
cannot reach a colleague's mail by guessing an id. Reviews and visibility
changes go through the same services as the API (app/review.py, app/crm.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import crm, review
from app.models import (
    DecisionRecord,
    Employee,
    Message,
    MessageOwner,
    PersonalContact,
    PolicyVersion,
)
from app.web.render import NO_RULE
from policies.model import Outcome, Visibility
from policies.observe import address_token

KEPT = (Outcome.CAPTURE.value, Outcome.METADATA_ONLY.value)
DROPPED = (Outcome.DROP.value, Outcome.REJECT.value)


@dataclass(frozen=True)
class Dropped:
    """All that is left of a dropped message: when, and which rule of which policy."""

    at: datetime
    outcome: str
    rule: str
    policy_sha256: str
    version_id: int | None  # the published version it was decided under


def _own(employee_id: int) -> sa.ColumnElement[bool]:
    return sa.exists().where(
        MessageOwner.message_id == Message.id, MessageOwner.employee_id == employee_id
    )


def _kept(employee_id: int) -> sa.ColumnElement[bool]:
    """My copy is kept: a colleague's capture of mail still waiting for my review is not
    among my captures."""
    return sa.exists().where(
        MessageOwner.message_id == Message.id,
        MessageOwner.employee_id == employee_id,
        MessageOwner.outcome.in_(KEPT),
    )


def own_message(session: Session, employee_id: int, message_id: int) -> Message | None:
    """One of this employee's own messages, or None (also for a colleague's)."""
    return session.scalar(sa.select(Message).where(Message.id == message_id, _own(employee_id)))


def captures(session: Session, employee_id: int, *, limit: int = 50) -> list[Message]:
    query = sa.select(Message).where(_kept(employee_id)).order_by(Message.id.desc()).limit(limit)
    return list(session.scalars(query))


def held(session: Session, employee_id: int) -> list[review.HeldCopy]:
    """My copies waiting for my review, those whose period ends first first."""
    query = review.held_by(employee_id).order_by(MessageOwner.held_until, Message.id)
    return review.held_copies(session, query)


def dropped(session: Session, employee_id: int, *, limit: int = 50) -> list[Dropped]:
    query = (
        sa.select(
            DecisionRecord.created_at,
            DecisionRecord.outcome,
            DecisionRecord.rules,
            DecisionRecord.policy_sha256,
            PolicyVersion.id,
        )
        .outerjoin(PolicyVersion, PolicyVersion.sha256 == DecisionRecord.policy_sha256)
        .where(DecisionRecord.employee_id == employee_id, DecisionRecord.outcome.in_(DROPPED))
        .order_by(DecisionRecord.id.desc())
        .limit(limit)
    )
    return [
        Dropped(at, outcome, str(rules[0]) if rules else NO_RULE, sha256, version_id)
        for at, outcome, rules, sha256, version_id in session.execute(query)
    ]


class NotAllowedError(Exception):
    """The change is refused for a reason the employee should read."""


def set_visibility(
    session: Session, employee_id: int, message_id: int, visibility: Visibility
) -> bool:
    """Change who may see one of my captures; False if it is not mine or not captured.
    The rule is the API's (app/crm.py: widening needs me to be the only owner)."""
    message = session.scalar(sa.select(Message).where(Message.id == message_id, _kept(employee_id)))
    if message is None:
        return False
    try:
        crm.change_visibility(session, employee_id, message, visibility.value)
    except ValueError as refused:
        raise NotAllowedError(str(refused)) from None
    return True


def capture_held(session: Session, message_id: int, at: review.Reviewer) -> bool:
    """I say a held message is business: it is filed as a capture, with its contacts
    (app/review.py, the same service as the API's). False if it is not mine or not held;
    NotAllowedError if a consent guardrail now forbids it."""
    message = review.find_held(session, at.employee_id, message_id)
    if message is None:
        return False
    try:
        review.capture(session, message, at)
    except review.BlockedError as refused:
        raise NotAllowedError(str(refused)) from None
    return True


def discard_held(session: Session, message_id: int, at: review.Reviewer) -> bool:
    """I say a held message is personal: my copy goes, and the message with it unless a
    colleague filed it too. Its content-free decision stays, and the choice is logged."""
    message = review.find_held(session, at.employee_id, message_id)
    if message is None:
        return False
    review.discard(session, message, at)
    return True


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


def add_personal_contact(session: Session, employee_id: int, address: str, secret: bytes) -> None:
    """Add it once, also when the same form is sent twice at once (a double click): as the
    API does, an entry that is already there is left as it is."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(PersonalContact)
        .values(
            employee_id=employee_id,
            address_token=address_token(secret, address),
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["employee_id", "address_token"])
    )


def remove_personal_contact(session: Session, employee_id: int, contact_id: int) -> bool:
    removed = session.execute(
        sa.delete(PersonalContact).where(
            PersonalContact.id == contact_id, PersonalContact.employee_id == employee_id
        )
    )
    return bool(removed.rowcount)  # type: ignore[attr-defined]
