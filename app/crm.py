"""Serve: the queries behind the CRM resources, with who-may-see-what applied in one place."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import Company, Contact, Employee, Message, MessageOwner, Participant
from app.schemas import CompanyOut, ContactOut, MessageOut, OwnerOut, ParticipantOut
from app.security import Principal, Role


def visible_messages(principal: Principal) -> sa.Select[Message]:
    """Messages this principal may see: an employee's own, and colleagues' shared captures."""
    shared = sa.and_(
        Message.visibility.in_(("shared", "subject_only")),
        Message.outcome.in_(("capture", "metadata_only")),
    )
    if principal.role is Role.EMPLOYEE:
        own = sa.exists().where(
            MessageOwner.message_id == Message.id,
            MessageOwner.employee_id == principal.employee_id,
        )
        return sa.select(Message).where(sa.or_(own, shared))
    return sa.select(Message).where(shared)


def list_messages(
    session: Session, principal: Principal, *, before: int | None, limit: int
) -> list[MessageOut]:
    query = visible_messages(principal).order_by(Message.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Message.id < before)
    return render_messages(session, principal, session.scalars(query).all())


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
    owner_rows = session.execute(
        sa.select(MessageOwner, Employee.email)
        .join(Employee, Employee.id == MessageOwner.employee_id)
        .where(MessageOwner.message_id.in_(ids))
    )
    for owner, email in owner_rows:
        owners[owner.message_id].append(
            OwnerOut(
                employee_id=owner.employee_id,
                email=email,
                channel=owner.channel,
                captured_at=owner.created_at,
            )
        )
    return [_render(m, principal, participants[m.id], contacts, owners[m.id]) for m in messages]


def _render(
    message: Message,
    principal: Principal,
    participants: list[Participant],
    contacts: dict[int, ContactOut],
    owners: list[OwnerOut],
) -> MessageOut:
    own = any(o.employee_id == principal.employee_id for o in owners)
    show_subject = own or message.visibility in ("shared", "subject_only")
    show_body = own or message.visibility == "shared"
    linked = dict.fromkeys(p.contact_id for p in participants if p.contact_id)
    return MessageOut(
        id=message.id,
        message_id=message.message_id,
        subject=message.subject if show_subject else None,
        body_text=message.body_text if show_body else None,
        sent_at=message.sent_at,
        direction=message.direction,
        outcome=message.outcome,
        visibility=message.visibility,
        decision_id=message.decision_id,
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


def list_contacts(session: Session, *, before: int | None, limit: int) -> list[ContactOut]:
    query = sa.select(Contact.id).order_by(Contact.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Contact.id < before)
    return contacts_by_id(session, list(session.scalars(query)))


def list_companies(session: Session, *, before: int | None, limit: int) -> list[CompanyOut]:
    query = sa.select(Company).order_by(Company.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Company.id < before)
    return [CompanyOut.model_validate(c) for c in session.scalars(query)]
