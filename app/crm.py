"""Serve: the queries behind the CRM resources, with who-may-see-what applied in one place."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db import UNICODE_LOWER
from app.models import (
    Company,
    Contact,
    ContactChange,
    Employee,
    Message,
    MessageOwner,
    Participant,
)
from app.schemas import (
    CompanyOut,
    CompanyWithContactsOut,
    ContactOut,
    MessageOut,
    OwnerOut,
    ParticipantOut,
)
from app.security import Principal, Role
from capture.parse import Address
from capture.people import person
from policies.model import Outcome

MAX_COMPANY_CONTACTS = 100


SHARED_VISIBILITIES = ("shared", "subject_only")
CAPTURED_OUTCOMES = ("capture", "metadata_only")
OWN_TEXT_OUTCOMES = ("capture", "hold")  # an owner's copy that shows them the text kept


def shared_capture() -> sa.ColumnElement[bool]:
    """A capture shared in full or by subject: what colleagues and integrations may see."""
    return sa.and_(
        Message.visibility.in_(SHARED_VISIBILITIES), Message.outcome.in_(CAPTURED_OUTCOMES)
    )


def _is_shared_capture(message: Message) -> bool:
    return message.visibility in SHARED_VISIBILITIES and message.outcome in CAPTURED_OUTCOMES


def visible_messages(principal: Principal) -> sa.Select[Message]:
    """Messages this principal may see: an employee's own, and colleagues' shared captures;
    an integration, shared captures if it holds `messages:read`, else none."""
    shared = shared_capture()
    if principal.role is Role.INTEGRATION and "messages:read" not in principal.scopes:
        return sa.select(Message).where(sa.false())
    if principal.role is Role.EMPLOYEE:
        own = sa.exists().where(
            MessageOwner.message_id == Message.id,
            MessageOwner.employee_id == principal.employee_id,
        )
        return sa.select(Message).where(sa.or_(own, shared))
    return sa.select(Message).where(shared)


HELD = Outcome.HOLD_FOR_REVIEW.value
KEPT_FIRST = Message.outcome == HELD  # false, a kept message, sorts first


class Answered(NamedTuple):
    """Whether a message answers one Mailroom holds (In-Reply-To or recent References), and
    whether one it answers is kept: captured or as metadata, not waiting for its review."""

    known: bool
    kept: bool

    @classmethod
    def of(cls, outcome: str | None) -> Answered:
        """From the outcome of the message answered that is kept, if any, else of any."""
        return cls(outcome is not None, outcome not in (None, HELD))


def answers_visible(conn: sa.Connection, principal: Principal, message_ids: list[str]) -> Answered:
    """What a message answering these Message-IDs answers, of the mail this principal may see."""
    if not message_ids:
        return Answered(False, False)
    query = visible_messages(principal).where(Message.message_id.in_(message_ids))
    return Answered.of(
        conn.scalar(query.with_only_columns(Message.outcome).order_by(KEPT_FIRST).limit(1))
    )


@dataclass(frozen=True)
class MessageFilter:
    """Narrow a message list: by a contact or company taking part, an owning employee, a
    thread, and the time it was sent (`since` <= sent < `until`)."""

    contact_id: int | None = None
    company_id: int | None = None
    employee_id: int | None = None
    thread_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_messages(
    session: Session,
    principal: Principal,
    *,
    before: int | None,
    limit: int,
    where: MessageFilter = MessageFilter(),
) -> list[MessageOut]:
    query = _messages_where(visible_messages(principal), where)
    query = query.order_by(Message.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Message.id < before)
    return render_messages(session, principal, session.scalars(query).all())


def _messages_where(query: sa.Select[Message], f: MessageFilter) -> sa.Select[Message]:
    if f.contact_id is not None:
        query = query.where(
            sa.exists().where(
                Participant.message_id == Message.id, Participant.contact_id == f.contact_id
            )
        )
    if f.company_id is not None:
        query = query.where(
            sa.exists().where(
                Participant.message_id == Message.id,
                Participant.contact_id == Contact.id,
                Contact.company_id == f.company_id,
            )
        )
    if f.employee_id is not None:
        query = query.where(
            sa.exists().where(
                MessageOwner.message_id == Message.id, MessageOwner.employee_id == f.employee_id
            )
        )
    if f.thread_id is not None:
        query = query.where(Message.thread_id == f.thread_id)
    if f.since is not None:
        query = query.where(Message.sent_at >= f.since)
    if f.until is not None:
        query = query.where(Message.sent_at < f.until)
    return query


def get_message(session: Session, principal: Principal, message_id: int) -> MessageOut | None:
    query = visible_messages(principal).where(Message.id == message_id)
    rows = session.scalars(query).all()
    return render_messages(session, principal, rows)[0] if rows else None


def render_messages(
    session: Session, principal: Principal, messages: Sequence[Message]
) -> list[MessageOut]:
    """Shape messages with their participants, contacts and owners in three queries."""
    ids = [m.id for m in messages]
    participants: dict[int, list[Participant]] = defaultdict(list)
    for p in session.scalars(sa.select(Participant).where(Participant.message_id.in_(ids))):
        participants[p.message_id].append(p)
    contact_ids = {p.contact_id for ps in participants.values() for p in ps if p.contact_id}
    contacts = {c.id: c for c in contacts_by_id(session, contact_ids)}
    owners: dict[int, list[OwnerOut]] = defaultdict(list)
    mine: dict[int, MessageOwner] = {}  # the principal's own copy, by message
    owner_rows = session.execute(
        sa.select(MessageOwner, Employee.email)
        .join(Employee, Employee.id == MessageOwner.employee_id)
        .where(MessageOwner.message_id.in_(ids))
    )
    for owner, email in owner_rows:
        if principal.role is Role.EMPLOYEE and owner.employee_id == principal.employee_id:
            mine[owner.message_id] = owner
        owners[owner.message_id].append(
            OwnerOut(
                employee_id=owner.employee_id,
                email=email,
                channel=owner.channel,
                captured_at=owner.created_at,
            )
        )
    return [
        _render(m, participants[m.id], contacts, owners[m.id], mine.get(m.id)) for m in messages
    ]


def _render(
    message: Message,
    participants: list[Participant],
    contacts: dict[int, ContactOut],
    owners: list[OwnerOut],
    mine: MessageOwner | None,
) -> MessageOut:
    """The message as the principal sees it; `mine`: their own copy, if they own one (its
    outcome, their copy waiting for review beside a colleague's capture, and the decision
    behind it, not the first filer's that the message names). An owner whose copy was kept
    as metadata sees the text a colleague's capture brought as colleagues do (app/filing.py
    `_take_text`)."""
    outcome = mine.outcome if mine is not None else None
    decision_id = mine.decision_id if mine is not None else None  # None: an older release's
    own_text = outcome in OWN_TEXT_OUTCOMES
    show_subject = own_text or message.visibility in ("shared", "subject_only")
    show_body = own_text or message.visibility == "shared"
    linked = dict.fromkeys(p.contact_id for p in participants if p.contact_id)
    return MessageOut(
        id=message.id,
        message_id=message.message_id,
        subject=message.subject if show_subject else None,
        body_text=message.body_text if show_body else None,
        sent_at=message.sent_at,
        direction=message.direction,
        outcome=outcome or message.outcome,
        visibility=message.visibility,
        decision_id=decision_id or message.decision_id,
        created_at=message.created_at,
        thread_id=message.thread_id,
        participants=[ParticipantOut.model_validate(p) for p in participants],
        contacts=[contacts[c] for c in linked if c is not None and c in contacts],
        owners=owners,
    )


def contacts_by_id(session: Session, ids: set[int] | list[int]) -> list[ContactOut]:
    if not ids:
        return []
    rows = session.execute(
        sa.select(Contact, Company)
        .outerjoin(Company, Company.id == Contact.company_id)
        .where(Contact.id.in_(ids))
        .order_by(Contact.id.desc())
    )
    return [_contact(contact, company) for contact, company in rows]


def _contact(contact: Contact, company: Company | None) -> ContactOut:
    return ContactOut(
        id=contact.id,
        address=contact.address,
        name=contact.name,
        first_name=contact.first_name,
        last_name=contact.last_name,
        title=contact.title,
        phone=contact.phone,
        organization=contact.organization,
        undeliverable_since=contact.undeliverable_since,
        merged_into_id=contact.merged_into_id,
        company=CompanyOut.model_validate(company) if company else None,
        created_at=contact.created_at,
        updated_at=contact.updated_at,
    )


def rename_contact(
    session: Session, contact_id: int, name: str, now: datetime
) -> ContactOut | None:
    """A person's name for the contact ("" clears it), kept in its history with no message
    (no mail said it). Mail names only a contact whose name has no history (app/filing.py
    `_name_contact`), so what a person left, an empty name too, stays. A name they replace
    may be wrong or private: it goes from the first and last name (split from theirs, or
    guessed from first.last@ as for a bare address) and from the history, which keeps that
    the name changed and when. None: no such contact."""
    from app.freshness import change  # app.freshness imports this module (via webhooks)

    contact = session.get(Contact, contact_id)
    if contact is None:
        return None
    session.execute(
        sa.update(ContactChange)
        .where(ContactChange.contact_id == contact_id, ContactChange.field == "name")
        .values(old_value="", new_value="")
    )
    change(session.connection(), contact_id, "name", "", name, message=None, observed=now, now=now)
    found = person(Address(contact.address, name))
    first, last = (found.first, found.last) if found else ("", "")
    contact.first_name, contact.last_name = first[:100], last[:100]
    contact.name, contact.updated_at = name, now
    session.flush()
    return contacts_by_id(session, [contact_id])[0]


@dataclass(frozen=True)
class ContactFilter:
    """Narrow a contact list: `q` in the name, address or company (case-insensitive), a
    company, and changed at or after `updated_since` (for integrations that sync)."""

    q: str | None = None
    company_id: int | None = None
    updated_since: datetime | None = None


def _containing(text: str) -> str:
    """A LIKE pattern for `text` anywhere, its own % and _ taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def lower(session: Session, column: InstrumentedAttribute[str]) -> sa.ColumnElement[str]:
    """The column in lower case as Python writes it (the pattern's), in every alphabet:
    SQLite's own lower() leaves `É` and `И` as they are."""
    if session.get_bind().dialect.name == "sqlite":
        return sa.Function(UNICODE_LOWER, column, type_=sa.String())
    return sa.func.lower(column)


def list_contacts(
    session: Session, *, before: int | None, limit: int, where: ContactFilter = ContactFilter()
) -> list[ContactOut]:
    query = sa.select(Contact.id).order_by(Contact.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Contact.id < before)
    if where.q:
        pattern = _containing(where.q)
        query = query.outerjoin(Company, Company.id == Contact.company_id).where(
            sa.or_(
                lower(session, Contact.name).like(pattern, escape="\\"),
                lower(session, Contact.address).like(pattern, escape="\\"),
                lower(session, Company.name).like(pattern, escape="\\"),
                Company.domain.like(pattern, escape="\\"),
            )
        )
    if where.company_id is not None:
        query = query.where(Contact.company_id == where.company_id)
    if where.updated_since is not None:
        query = query.where(Contact.updated_at >= where.updated_since)
    return contacts_by_id(session, list(session.scalars(query)))


def list_companies(
    session: Session, *, before: int | None, limit: int, q: str | None = None
) -> list[CompanyOut]:
    query = sa.select(Company).order_by(Company.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Company.id < before)
    if q:
        pattern = _containing(q)
        query = query.where(
            sa.or_(
                lower(session, Company.name).like(pattern, escape="\\"),
                Company.domain.like(pattern, escape="\\"),
            )
        )
    return [CompanyOut.model_validate(c) for c in session.scalars(query)]


def company_with_contacts(session: Session, company_id: int) -> CompanyWithContactsOut | None:
    """A company and its contacts (the first MAX_COMPANY_CONTACTS, newest first; the rest
    through /contacts?company_id=)."""
    company = session.get(Company, company_id)
    if company is None:
        return None
    ids = session.scalars(
        sa.select(Contact.id)
        .where(Contact.company_id == company_id)
        .order_by(Contact.id.desc())
        .limit(MAX_COMPANY_CONTACTS)
    )
    total = session.scalar(
        sa.select(sa.func.count()).select_from(Contact).where(Contact.company_id == company_id)
    )
    return CompanyWithContactsOut(
        **CompanyOut.model_validate(company).model_dump(),
        contact_count=total or 0,
        contacts=contacts_by_id(session, list(ids)),
    )


VISIBILITY_ORDER = ("shared", "subject_only", "private")  # from most to least seen


def set_visibility(
    session: Session, principal: Principal, message_id: int, visibility: str
) -> MessageOut | None:
    """Change who sees a message; only an owner may (see `change_visibility`).

    None if the principal cannot see the message; PermissionError if they are not an owner;
    ValueError if the change would show a colleague's copy to more people."""
    message = session.scalars(visible_messages(principal).where(Message.id == message_id)).first()
    if message is None:
        return None
    if principal.employee_id is None or not _owns(session, principal.employee_id, message_id):
        raise PermissionError("only an owner may change who sees a message")
    change_visibility(session, principal.employee_id, message, visibility)
    session.flush()
    return render_messages(session, principal, [message])[0]


def change_visibility(
    session: Session, employee_id: int, message: Message, visibility: str
) -> None:
    """An owner may always narrow who sees a message. Widening needs them to be its only
    owner: a colleague who filed the same mail did not agree to share it. A capture that
    integrations may read from now on is announced to them (message.captured), as it would
    have been had it been shared when filed: its id is older than those they have seen."""
    widening = VISIBILITY_ORDER.index(visibility) < VISIBILITY_ORDER.index(message.visibility)
    if widening and session.scalar(
        sa.select(MessageOwner.id)
        .where(MessageOwner.message_id == message.id, MessageOwner.employee_id != employee_id)
        .limit(1)
    ):
        raise ValueError("a colleague filed this message too, so it is not yours to share")
    hidden = not _is_shared_capture(message)
    message.visibility = visibility
    if hidden and _is_shared_capture(message):
        from app import webhooks  # which reads who may see what from this module

        session.flush()
        channel = session.scalar(
            sa.select(MessageOwner.channel).where(
                MessageOwner.message_id == message.id, MessageOwner.employee_id == employee_id
            )
        )
        webhooks.captured(
            session,
            message_id=message.id,
            employee_id=employee_id,
            channel=channel or "",
            now=datetime.now(UTC),
        )


def _owns(session: Session, employee_id: int, message_id: int) -> bool:
    owner = session.scalar(
        sa.select(MessageOwner.id).where(
            MessageOwner.message_id == message_id, MessageOwner.employee_id == employee_id
        )
    )
    return owner is not None
