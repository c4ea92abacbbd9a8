"""File: an employee's review of the messages the policy held for them: capture or discard.

Guardrails still apply at review: a participant who objected, was erased or is on the
employee's personal-contacts list since the message was held keeps it from being captured."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import filing, ledger, webhooks
from app.models import Message, MessageOwner, Participant, PersonalContact, Suppression
from app.threads import remove_emptied
from policies.model import Outcome, Visibility
from policies.observe import address_tokens

if TYPE_CHECKING:
    from app.runtime import Runtime


@dataclass(frozen=True)
class Reviewer:
    employee_id: int
    secret: bytes
    org_domains: frozenset[str]
    visibility: str  # the policy's default for captures
    policy_sha256: str
    now: datetime


def reviewer(runtime: Runtime, employee_id: int) -> Reviewer:
    """The employee reviewing, under the policy in force now."""
    policy = runtime.pipeline.engine.policy
    return Reviewer(
        employee_id=employee_id,
        secret=runtime.pipeline.secret,
        org_domains=frozenset(runtime.settings.org_domains),
        visibility=policy.policy.default_visibility.value,
        policy_sha256=policy.sha256,
        now=datetime.now(UTC),
    )


class BlockedError(Exception):
    """A guardrail forbids capturing this message now."""


@dataclass(frozen=True)
class HeldCopy:
    """An employee's copy waiting for their review, when their review period ends, and the
    decision that held it (theirs: a colleague's copy of the same mail has its own)."""

    message: Message
    held_until: datetime | None
    decision_id: int


def held_by(employee_id: int) -> sa.Select[Message, datetime | None, int]:
    """This employee's copies waiting for their review, each with the end of its period
    and the decision that held it: a colleague's choice about the same mail leaves theirs
    waiting."""
    # A copy an older release filed names no decision: the message's is the one known.
    decision = sa.func.coalesce(MessageOwner.decision_id, Message.decision_id)
    return sa.select(Message, MessageOwner.held_until, decision).join(
        MessageOwner,
        sa.and_(
            MessageOwner.message_id == Message.id,
            MessageOwner.employee_id == employee_id,
            MessageOwner.outcome == Outcome.HOLD_FOR_REVIEW.value,
        ),
    )


def held_copies(
    session: Session, query: sa.Select[Message, datetime | None, int]
) -> list[HeldCopy]:
    return [HeldCopy(*row) for row in session.execute(query)]


def remove_held_copies(
    session: Session, copies: sa.ColumnElement[bool], messages: sa.ColumnElement[bool]
) -> tuple[int, list[int | None]]:
    """Remove the copies waiting for review that `copies` selects; then, of the held messages
    `messages` selects, those no one keeps or waits for any longer (a colleague's capture of
    the same mail stays). How many copies, and the removed messages' threads (for
    remove_emptied)."""
    removed = session.execute(
        sa.delete(MessageOwner)
        .where(MessageOwner.outcome == Outcome.HOLD_FOR_REVIEW.value, copies)
        .returning(MessageOwner.id)
    )
    count = len(removed.all())
    unowned = session.execute(
        sa.delete(Message)
        .where(
            Message.outcome == Outcome.HOLD_FOR_REVIEW.value,
            messages,
            ~sa.exists().where(MessageOwner.message_id == Message.id),
        )
        .returning(Message.thread_id)
    )
    return count, list(unowned.scalars())


def queue(
    session: Session, employee_id: int, *, before: int | None, limit: int
) -> list[tuple[HeldCopy, list[str]]]:
    """This employee's held copies, newest first, with their participants' addresses."""
    query = held_by(employee_id).order_by(Message.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Message.id < before)
    copies = held_copies(session, query)
    addresses: dict[int, list[str]] = {c.message.id: [] for c in copies}
    for message_id, address in session.execute(
        sa.select(Participant.message_id, Participant.address).where(
            Participant.message_id.in_(list(addresses))
        )
    ):
        addresses[message_id].append(address)
    return [(c, addresses[c.message.id]) for c in copies]


def find_held(session: Session, employee_id: int, message_id: int) -> Message | None:
    """The held copy a capture or discard is about, looked for once the log's lock is
    held (the lock capture and discard take first): a second click, or the API and a page
    at once, waits for the first choice to commit and then finds it no longer held, instead
    of filing or deleting it again."""
    ledger.wait_for_appends(session)
    found = session.execute(held_by(employee_id).where(Message.id == message_id)).first()
    return found[0] if found is not None else None


def capture(session: Session, message: Message, at: Reviewer) -> None:
    """File the employee's held copy as they chose: contacts, their relationships, and the
    message's visibility if no colleague kept it before. A colleague's copy still waiting
    for their own review stays so."""
    # The log's lock first, as an erasure takes it: on PostgreSQL an erasure holding it
    # while this held the message's rows would deadlock with it.
    ledger.wait_for_appends(session)
    participants = list(
        session.scalars(
            sa.select(Participant)
            .where(Participant.message_id == message.id)
            .order_by(Participant.id)
        )
    )
    _check_guardrails(session, [p.address for p in participants], at)
    conn = session.connection()
    contacts = filing.file_contacts(conn, message.id, at.org_domains, at.now)
    for participant in participants:  # their contacts were set beside the ORM
        session.expire(participant)
    sender = next((p for p in participants if p.role == "from"), None)
    filing.count_exchange(
        conn,
        contacts,
        employee_id=at.employee_id,
        sender=sender.address.lower() if sender else "",
        outbound=sender is not None and sender.employee_id == at.employee_id,
        seen=message.sent_at or at.now,
    )
    with_text = message.subject is not None or message.body_text is not None
    kept = Outcome.CAPTURE if with_text else Outcome.METADATA_ONLY
    chosen = _log(session, "review-capture", message.id, at)  # explains their copy now
    session.execute(
        sa.update(MessageOwner)
        .where(MessageOwner.message_id == message.id, MessageOwner.employee_id == at.employee_id)
        .values(outcome=kept.value, held_until=None, decision_id=chosen)
    )
    if message.outcome == Outcome.HOLD_FOR_REVIEW.value:  # else a colleague kept it first
        message.outcome = kept.value
        message.visibility, message.held_until = _visibility(session, message, at), None
    session.flush()
    webhooks.captured(
        session, message_id=message.id, employee_id=at.employee_id, channel="review", now=at.now
    )


def discard(session: Session, message: Message, at: Reviewer) -> None:
    """The employee's copy goes; the message goes once no other owner keeps it or waits
    for it, and its thread once no message is in it."""
    ledger.wait_for_appends(session)  # as an erasure does: the same order of locks
    session.execute(
        sa.delete(MessageOwner).where(
            MessageOwner.message_id == message.id, MessageOwner.employee_id == at.employee_id
        )
    )
    others = session.scalar(
        sa.select(sa.func.count())
        .select_from(MessageOwner)
        .where(MessageOwner.message_id == message.id)
    )
    if not others:
        thread = message.thread_id
        session.execute(sa.delete(Message).where(Message.id == message.id))
        remove_emptied(session, [thread])
    _log(session, "review-discard", message.id, at)


def _visibility(session: Session, message: Message, at: Reviewer) -> str:
    """The policy's default, unless a colleague filed the same mail: then owners only, as
    PATCH /messages rules (app/crm.py), since they did not agree to share it."""
    other_owner = session.scalar(
        sa.select(MessageOwner.id)
        .where(MessageOwner.message_id == message.id, MessageOwner.employee_id != at.employee_id)
        .limit(1)
    )
    return Visibility.PRIVATE.value if other_owner is not None else at.visibility


def _check_guardrails(session: Session, addresses: list[str], at: Reviewer) -> None:
    tokens = [t for a in addresses for t in address_tokens(at.secret, a)]  # older spellings too
    suppressed = session.scalar(
        sa.select(sa.func.count())
        .select_from(Suppression)
        .where(Suppression.address_token.in_(tokens))
    )
    personal = session.scalar(
        sa.select(sa.func.count())
        .select_from(PersonalContact)
        .where(
            PersonalContact.employee_id == at.employee_id,
            PersonalContact.address_token.in_(tokens),
        )
    )
    if suppressed:
        raise BlockedError("a participant objected or had their data erased; discard it instead")
    if personal:
        raise BlockedError("a participant is on your personal-contacts list; discard it instead")


def _log(session: Session, kind: str, message_id: int, at: Reviewer) -> int:
    """Chain the choice into the decision log; its record's id."""
    return ledger.append_action(
        session,
        ledger.Action(
            created_at=at.now,
            kind=kind,
            employee_id=at.employee_id,
            policy_sha256=at.policy_sha256,
            facts={"message_id": message_id},
        ),
    ).id
