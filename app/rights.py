"""Record: data-subject rights (objection, erasure, access), each chained into the ledger
in content-free terms; the suppression list keeps every channel from bringing a person back."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from app import ledger, review, webhooks
from app.models import (
    Company,
    Contact,
    ContactChange,
    Employee,
    EmployeeAlias,
    Message,
    MessageOwner,
    Participant,
    Relationship,
    Suppression,
)
from app.threads import remove_emptied
from capture.parse import earlier_spelling
from policies.observe import address_token, address_tokens, is_internal


@dataclass(frozen=True)
class Request:
    """Who asks, under which policy, when, and the key that turns addresses into digests."""

    secret: bytes
    org_domains: frozenset[str]
    policy_sha256: str
    now: datetime


@dataclass(frozen=True)
class Outcome:
    record: ledger.Chained
    contact_found: bool
    messages_removed: int = 0
    participations_removed: int = 0
    held_removed: int = 0


def _any_address(
    session: Session, column: InstrumentedAttribute[str], addresses: set[str]
) -> sa.ColumnElement[bool]:
    """The column names one of the (lowercased) addresses, in any case. SQLite's lower()
    folds A to Z only, while mail keeps a local part as written (`ÉLODIE@`): the spellings
    stored at the addresses' domains are read, and folded as the addresses were."""
    domains = sorted({a.rpartition("@")[2] for a in addresses})
    near = sa.or_(*(sa.func.lower(column).endswith(f"@{d}", autoescape=True) for d in domains))
    stored = session.scalars(sa.select(column).where(near).distinct())
    return column.in_(sorted({s for s in stored if _folded(s) in addresses}))


def _folded(address: str) -> str:
    """An address as these requests compare them: lowercased, and its accents composed (NFC)
    as capture.parse.normalize_address composes them (earlier releases kept participants
    as the mail wrote them, maybe decomposed)."""
    written = address.strip()
    return (written if written.isascii() else unicodedata.normalize("NFC", written)).lower()


def _spellings(*addresses: str) -> set[str]:
    """The addresses as stored now, and as releases before 2026-11-24 stored them in
    participants and history where that differs (capture.parse.earlier_spelling). Rows of
    the old spelling cannot tell its two domains apart: they go too, the cautious side."""
    lowered = {_folded(a) for a in addresses}
    return lowered | {e for a in lowered if (e := earlier_spelling(a)) is not None}


def is_employee(session: Session, address: str) -> bool:
    """Whether the address is an employee's, as email or alias (both stored lowercased)."""
    wanted = address.strip().lower()
    return (
        session.scalar(sa.select(Employee.id).where(Employee.email == wanted)) is not None
        or session.scalar(sa.select(EmployeeAlias.id).where(EmployeeAlias.address == wanted))
        is not None
    )


def contact_address(session: Session, contact_id: int) -> str | None:
    return session.scalar(sa.select(Contact.address).where(Contact.id == contact_id))


def erase(session: Session, address: str, at: Request) -> Outcome:
    """Art. 17: the contact goes, with the contacts merged into it (the same person's other
    addresses) and any history naming one of their addresses; mail waiting for review with
    them goes, the messages they alone stood for go, they leave the others' participants,
    and a keyed digest of each address joins the suppression list."""
    ledger.wait_for_appends(session)  # mail being filed with them is filed, and found, first
    found, people, addresses = _person(session, address)
    spellings = _spellings(*addresses)  # with the rows an earlier release spelled otherwise
    removed, held, left = _leave_messages(session, spellings, at)
    _forget_contacts(session, people, spellings, at)
    for each in sorted(addresses):  # the old spellings' digests are checked as well anyway
        _suppress(session, each, "erased", at, replace=True)
    facts = {
        "contact_found": bool(found),
        "messages_removed": removed,
        "held_removed": held,
        "participations_removed": left,
    }
    record = _log(session, "erasure", facts, at)
    return Outcome(
        record,
        bool(found),
        messages_removed=removed,
        participations_removed=left,
        held_removed=held,
    )


def _person(session: Session, address: str) -> tuple[list[Contact], list[Contact], set[str]]:
    """The contacts with the address, those with them and the same person's other addresses
    (the contact theirs was merged into, and every contact merged into that one), and every
    address of theirs, lowercased."""
    wanted = _folded(address)
    found = list(
        session.scalars(sa.select(Contact).where(_any_address(session, Contact.address, {wanted})))
    )
    shown = {c.merged_into_id or c.id for c in found}  # a merge leaves no chain behind
    same = session.scalars(
        sa.select(Contact)
        .where(Contact.id.in_(shown) | Contact.merged_into_id.in_(shown))
        .order_by(Contact.id)
    ).all()
    people = [*found, *(c for c in same if c not in found)]
    return found, people, {wanted, *(_folded(c.address) for c in people)}


def _leave_messages(session: Session, addresses: set[str], at: Request) -> tuple[int, int, int]:
    """Remove every copy with the person that waits for review (and the messages no one
    keeps then), the messages they alone stood for, and the person from the others. How
    many messages, held copies, participations."""
    theirs = _any_address(session, Participant.address, addresses)
    held, removed, threads = _drop_held_copies(session, _with(session, addresses))
    left = 0
    for message_id in session.scalars(_with(session, addresses)).all():
        if _stood_alone(session, message_id, addresses, at):
            deleted = session.execute(
                sa.delete(Message).where(Message.id == message_id).returning(Message.thread_id)
            )
            threads.extend(deleted.scalars())
            removed += 1
        else:
            gone = session.execute(
                sa.delete(Participant).where(Participant.message_id == message_id, theirs)
            )
            left += int(gone.rowcount or 0)  # type: ignore[attr-defined]
    remove_emptied(session, threads)
    return removed, held, left


def _drop_held_copies(
    session: Session, message_ids: sa.Select[int]
) -> tuple[int, int, list[int | None]]:
    """Remove every employee's copy of these messages that waits for review, then the
    messages no one keeps or waits for any longer. How many copies, how many messages,
    and the removed messages' threads."""
    held, threads = review.remove_held_copies(
        session, MessageOwner.message_id.in_(message_ids), Message.id.in_(message_ids)
    )
    return held, len(threads), threads


def _forget_contacts(
    session: Session, contacts: list[Contact], addresses: set[str], at: Request
) -> None:
    """Delete the contacts (their relationships and history go with them), other contacts'
    history naming one of the addresses (a likely job move, a merge), and each contact's
    company once no other contact is at it: one made for a person's own domain names them."""
    session.execute(
        sa.delete(ContactChange).where(
            _any_address(session, ContactChange.old_value, addresses)
            | _any_address(session, ContactChange.new_value, addresses)
        )
    )
    for contact in contacts:
        webhooks.emit(session, "contact.erased", {"contact_id": contact.id}, at.now)
    companies = {c.company_id for c in contacts if c.company_id is not None}
    session.execute(sa.delete(Contact).where(Contact.id.in_([c.id for c in contacts])))
    still_used = sa.exists().where(Contact.company_id == Company.id)
    session.execute(sa.delete(Company).where(Company.id.in_(companies), ~still_used))


def _stood_alone(session: Session, message_id: int, addresses: set[str], at: Request) -> bool:
    """Whether the person is the message's only participant from outside the organization:
    an employee is one of ours at any domain (filing marked them)."""
    external = {
        _folded(a)
        for a, employee in session.execute(
            sa.select(Participant.address, Participant.employee_id).where(
                Participant.message_id == message_id
            )
        )
        if employee is None and not is_internal(a.lower(), at.org_domains)
    }
    return external <= addresses


def object_to(session: Session, address: str, at: Request) -> Outcome:
    """Art. 21: the guardrail drops their future mail, to any address merged into their
    contact too; mail still waiting for review goes. What was filed before stays until
    compliance decides on erasure."""
    ledger.wait_for_appends(session)  # mail being held with them is held, and found, first
    found, _people, addresses = _person(session, address)
    held, _, threads = _drop_held_copies(session, _with(session, _spellings(*addresses)))
    remove_emptied(session, threads)
    for each in sorted(addresses):
        _suppress(session, each, "objected", at, replace=False)
    facts = {"contact_found": bool(found), "held_removed": held}
    return Outcome(_log(session, "objection", facts, at), bool(found), held_removed=held)


def export(session: Session, contact_id: int, at: Request) -> dict[str, Any] | None:
    """Art. 15: everything held about a contact, except message text, which only the
    messages' owners may read; the export itself is logged. The mail of the addresses
    merged into the contact is theirs too."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        return None
    addresses = _spellings(*_person(session, contact.address)[2])
    company = session.get(Company, contact.company_id) if contact.company_id else None
    relationships = [
        {
            "employee_id": r.employee_id,
            "sent_count": r.sent_count,
            "received_count": r.received_count,
            "first_seen": r.first_seen.isoformat(),
            "last_seen": r.last_seen.isoformat(),
        }
        for r in session.scalars(
            sa.select(Relationship).where(Relationship.contact_id == contact_id)
        )
    ]
    messages = [
        {
            "id": message.id,
            "role": role,
            "name_as_written": name,
            "sent_at": message.sent_at.isoformat() if message.sent_at else None,
            "direction": message.direction,
            "outcome": message.outcome,
            "filed_at": message.created_at.isoformat(),
            "owners": list(
                session.scalars(
                    sa.select(MessageOwner.employee_id).where(MessageOwner.message_id == message.id)
                )
            ),
        }
        for message, role, name in session.execute(
            sa.select(Message, Participant.role, Participant.name)
            .join(Participant, Participant.message_id == Message.id)
            .where(_any_address(session, Participant.address, addresses))
            .order_by(Message.id)
        )
    ]
    tokens = address_tokens(at.secret, contact.address)
    objected = session.scalar(
        sa.select(Suppression.kind).where(Suppression.address_token.in_(tokens)).limit(1)
    )
    return {
        "contact": _contact_fields(contact),
        "history": _history(session, contact.id),
        "company": {"id": company.id, "domain": company.domain, "name": company.name}
        if company
        else None,
        "relationships": relationships,
        "messages": messages,
        "objected": objected == "objected",
    }


def _contact_fields(contact: Contact) -> dict[str, Any]:
    """The contact as held: what mail named them, and what their signatures and bounces said."""

    def moment(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": contact.id,
        "address": contact.address,
        "name": contact.name,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "title": contact.title,
        "phone": contact.phone,
        "organization": contact.organization,
        "signature_at": moment(contact.signature_at),
        "undeliverable_since": moment(contact.undeliverable_since),
        "created_at": contact.created_at.isoformat(),
        "updated_at": contact.updated_at.isoformat(),
    }


def _history(session: Session, contact_id: int) -> list[dict[str, Any]]:
    """Every change to the contact, oldest first, but the likely job moves: those name a
    namesake's address, who may be somebody else."""
    changes = session.scalars(
        sa.select(ContactChange)
        .where(ContactChange.contact_id == contact_id, ContactChange.field != "likely-job-move")
        .order_by(ContactChange.id)
    )
    return [
        {
            "field": c.field,
            "old_value": c.old_value,
            "new_value": c.new_value,
            "message_id": c.message_id,
            "observed_at": c.observed_at.isoformat(),
        }
        for c in changes
    ]


def log_export(session: Session, contact_id: int, at: Request) -> ledger.Chained:
    return _log(session, "access-export", {"contact_id": contact_id}, at)


def _with(session: Session, addresses: set[str]) -> sa.Select[int]:
    """The ids of the messages any of the (lowercased) addresses takes part in."""
    return (
        sa.select(Participant.message_id)
        .where(_any_address(session, Participant.address, addresses))
        .distinct()
    )


def _suppress(session: Session, address: str, kind: str, at: Request, *, replace: bool) -> None:
    """Add the address's digest to the suppression list; an erasure outranks an objection."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    values = {
        "address_token": address_token(at.secret, address),
        "kind": kind,
        "created_at": at.now,
    }
    statement = insert(Suppression).values(values)
    if replace:
        statement = statement.on_conflict_do_update(
            index_elements=["address_token"], set_={"kind": kind}
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["address_token"])
    session.execute(statement)


def _log(session: Session, kind: str, facts: dict[str, Any], at: Request) -> ledger.Chained:
    return ledger.append_action(
        session,
        ledger.Action(
            created_at=at.now,
            kind=kind,
            employee_id=None,
            policy_sha256=at.policy_sha256,
            facts=facts,
        ),
    )
