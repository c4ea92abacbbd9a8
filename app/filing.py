"""File: a decided message against contacts, companies, its owner and their relationships."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import (
    Company,
    Contact,
    Message,
    MessageOwner,
    Participant,
    Relationship,
)
from capture.parse import Address, ParsedMessage
from policies.model import Channel, Decision, Outcome
from policies.observe import is_internal

ROLES = ("from", "to", "cc", "reply-to")


@dataclass(frozen=True)
class Filing:
    """Who captured the message, through which channel, and what the organization is."""

    employee_id: int
    employee_addresses: frozenset[str]
    channel: Channel
    org_domains: frozenset[str]
    now: datetime
    hold_days: int


def dedupe_key(message: ParsedMessage) -> str:
    """Message-ID plus a digest of the text: the same mail from two employees is one message."""
    if message.message_id:
        text_digest = hashlib.sha256(message.text.encode("utf-8", "replace")).hexdigest()
        basis = f"mid:{message.message_id}\n{text_digest}"
    else:
        basis = f"raw:{message.digest}"
    return hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()


def file_message(
    session: Session, message: ParsedMessage, decision: Decision, *, decision_id: int, at: Filing
) -> int:
    """Store a kept message (capture, metadata only or hold) and link it; returns its id."""
    assert decision.outcome.keeps_message, "drops and rejects are never filed"
    key = dedupe_key(message)
    existing = session.scalar(sa.select(Message.id).where(Message.dedupe_key == key))
    if existing is None:
        existing = _insert_message(
            session, message, decision, key=key, decision_id=decision_id, at=at
        )
        contacts = _file_participants(session, message, existing, decision.outcome, at)
        _touch_relationships(session, message, contacts, at)
    _upsert(
        session,
        MessageOwner,
        {
            "message_id": existing,
            "employee_id": at.employee_id,
            "channel": at.channel.value,
            "created_at": at.now,
        },
        ("message_id", "employee_id"),
    )
    return existing


def _insert_message(
    session: Session,
    message: ParsedMessage,
    decision: Decision,
    *,
    key: str,
    decision_id: int,
    at: Filing,
) -> int:
    held = decision.outcome is Outcome.HOLD_FOR_REVIEW
    # A message the employee sent us may wait with its text; one read from a mailbox waits
    # with none, and is fetched again only if the employee chooses to capture it.
    submitted = at.channel in (Channel.BCC, Channel.FORWARD)
    with_content = decision.outcome is Outcome.CAPTURE or (held and submitted)
    sender = message.sender
    outbound = sender is not None and sender.address in at.employee_addresses
    values: dict[str, Any] = {
        "dedupe_key": key,
        "message_id": message.message_id,
        "content_digest": message.digest,
        "subject": message.subject if with_content else None,
        "body_text": message.text if with_content else None,
        "sent_at": message.date,
        "direction": "outbound" if outbound else "inbound",
        "outcome": decision.outcome.value,
        "visibility": "private" if held else decision.visibility.value,
        "size": message.size,
        "held_until": at.now + timedelta(days=at.hold_days) if held else None,
        "decision_id": decision_id,
        "created_at": at.now,
    }
    result = session.execute(sa.insert(Message).values(values).returning(Message.id))
    return int(result.scalar_one())


def _file_participants(
    session: Session, message: ParsedMessage, message_row: int, outcome: Outcome, at: Filing
) -> dict[str, int]:
    """Participant rows for every address; contacts only for external ones on kept mail."""
    make_contacts = outcome in (Outcome.CAPTURE, Outcome.METADATA_ONLY)
    contacts: dict[str, int] = {}
    rows = []
    for role, addresses in zip(
        ROLES, (message.from_, message.to, message.cc, message.reply_to), strict=True
    ):
        for addr in addresses:
            external = not is_internal(addr.address, at.org_domains)
            if external and make_contacts and addr.address not in contacts:
                contacts[addr.address] = _contact_id(session, addr, at.now)
            rows.append(
                {
                    "message_id": message_row,
                    "role": role,
                    "address": addr.address,
                    "name": addr.name,
                    "contact_id": contacts.get(addr.address),
                    "employee_id": at.employee_id
                    if addr.address in at.employee_addresses
                    else None,
                }
            )
    if rows:
        session.execute(sa.insert(Participant), rows)
    return contacts


def _contact_id(session: Session, addr: Address, now: datetime) -> int:
    company_id = _get_or_create(
        session, Company, {"domain": addr.domain, "name": addr.domain, "created_at": now}, "domain"
    )
    values = {
        "address": addr.address,
        "name": addr.name,
        "company_id": company_id,
        "created_at": now,
        "updated_at": now,
    }
    return _get_or_create(session, Contact, values, "address")


def _touch_relationships(
    session: Session, message: ParsedMessage, contacts: dict[str, int], at: Filing
) -> None:
    """Employee↔contact counts: sent when the employee wrote, received when the contact did."""
    sender = message.sender.address if message.sender else None
    seen = message.date or at.now
    for address, contact_id in contacts.items():
        sent = sender in at.employee_addresses and address != sender
        received = address == sender
        if not (sent or received):
            continue
        _bump_relationship(
            session,
            {
                "employee_id": at.employee_id,
                "contact_id": contact_id,
                "sent_count": int(sent),
                "received_count": int(received),
                "first_seen": seen,
                "last_seen": seen,
            },
        )


def _bump_relationship(session: Session, values: dict[str, Any]) -> None:
    stmt = _dialect_insert(session, Relationship).values(values)
    table = Relationship.__table__.c
    postgres = session.get_bind().dialect.name == "postgresql"
    earliest, latest = (sa.func.least, sa.func.greatest) if postgres else (sa.func.min, sa.func.max)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["employee_id", "contact_id"],
            set_={
                "sent_count": table.sent_count + stmt.excluded.sent_count,
                "received_count": table.received_count + stmt.excluded.received_count,
                "first_seen": earliest(table.first_seen, stmt.excluded.first_seen),
                "last_seen": latest(table.last_seen, stmt.excluded.last_seen),
            },
        )
    )


def _dialect_insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _get_or_create(session: Session, model: Any, values: dict[str, Any], unique: str) -> int:
    column = getattr(model, unique)
    found = session.scalar(sa.select(model.id).where(column == values[unique]))
    if found is not None:
        return int(found)
    stmt = (
        _dialect_insert(session, model)
        .values(values)
        .on_conflict_do_nothing(index_elements=[unique])
    )
    session.execute(stmt)
    return int(session.execute(sa.select(model.id).where(column == values[unique])).scalar_one())


def _upsert(session: Session, model: Any, values: dict[str, Any], unique: tuple[str, ...]) -> None:
    stmt = _dialect_insert(session, model).values(values)
    session.execute(stmt.on_conflict_do_nothing(index_elements=list(unique)))
