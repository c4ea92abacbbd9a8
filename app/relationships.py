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
    rows = session.execute(
        sa.select(Relationship, Employee.email, Employee.name)
        .join(Employee, Employee.id == Relationship.employee_id)
        .where(where)
        .limit(1000)
    ).all()
    contacts = {c.id: c for c in contacts_by_id(session, {r.contact_id for r, _, _ in rows})}
    found = [
        RelationshipOut(
            employee_id=r.employee_id,
            employee_email=email,
            employee_name=name,
            contact=contacts[r.contact_id],
            sent_count=r.sent_count,
            received_count=r.received_count,
            first_seen=r.first_seen,
            last_seen=r.last_seen,
            strength=strength(
                sent=r.sent_count, received=r.received_count, last_seen=r.last_seen, now=now
            ),
        )
        for r, email, name in rows
        if r.contact_id in contacts
    ]
    return sorted(found, key=lambda r: (-r.strength, -r.last_seen.timestamp()))
