"""Serve: who on the team knows a contact, and how well: the employee↔contact relationships.

Strength, 0-100, is documented in the README ("Relationship strength"):

    volume      = 1 - exp(-(sent + received) / 10)        ten exchanges make it substantial
    reciprocity = 1.0 when both sides wrote, else 0.5     two-way is worth twice one-way
    recency     = 0.5 ** (days since last exchange / 90)  halves every three months
    strength    = round(100 * volume * reciprocity * recency)
"""

from __future__ import annotations

import math
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.crm import contacts_by_id
from app.models import Employee, Relationship
from app.schemas import RelationshipOut

HALF_LIFE_DAYS = 90.0
VOLUME_SCALE = 10.0
ONE_WAY = 0.5
MAX_SHOWN = 1000  # relationships in one answer


def strength(*, sent: int, received: int, last_seen: datetime, now: datetime) -> int:
    volume = 1 - math.exp(-(sent + received) / VOLUME_SCALE)
    reciprocity = 1.0 if sent and received else ONE_WAY
    days = max(0.0, (now - last_seen).total_seconds() / 86400)
    recency = 0.5 ** (days / HALF_LIFE_DAYS)
    score: float = 100 * volume * reciprocity * recency
    return round(score)


def for_contact(session: Session, contact_id: int, now: datetime) -> list[RelationshipOut]:
    """Everyone on the team who exchanged mail with this contact, strongest first."""
    return _relationships(session, Relationship.contact_id == contact_id, now)


def for_employee(session: Session, employee_id: int, now: datetime) -> list[RelationshipOut]:
    """The contacts an employee exchanged mail with, strongest first."""
    return _relationships(session, Relationship.employee_id == employee_id, now)


def _relationships(
    session: Session, where: sa.ColumnElement[bool], now: datetime
) -> list[RelationshipOut]:
    """The MAX_SHOWN strongest, strongest first. Strength is reckoned here, not in SQL, so
    every relationship is ranked before the cut, not only the first rows the database read."""
    rows = session.execute(
        sa.select(
            Relationship.employee_id,
            Relationship.contact_id,
            Relationship.sent_count,
            Relationship.received_count,
            Relationship.first_seen,
            Relationship.last_seen,
            Employee.email.label("employee_email"),
            Employee.name.label("employee_name"),
        )
        .join(Employee, Employee.id == Relationship.employee_id)
        .where(where)
    ).all()
    scored = [
        (strength(sent=r.sent_count, received=r.received_count, last_seen=r.last_seen, now=now), r)
        for r in rows
    ]
    scored.sort(key=lambda pair: (-pair[0], -pair[1].last_seen.timestamp()))
    ranked = scored[:MAX_SHOWN]
    contacts = {c.id: c for c in contacts_by_id(session, {r.contact_id for _, r in ranked})}
    return [
        RelationshipOut(
            employee_id=r.employee_id,
            employee_email=r.employee_email,
            employee_name=r.employee_name,
            contact=contacts[r.contact_id],
            sent_count=r.sent_count,
            received_count=r.received_count,
            first_seen=r.first_seen,
            last_seen=r.last_seen,
            strength=score,
        )
        for score, r in ranked
        if r.contact_id in contacts
    ]
