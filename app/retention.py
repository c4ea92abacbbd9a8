"""Record: what the policy says must not be kept any longer is removed, on a schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import Message

PURGE_EVERY = 600.0  # seconds


def purge_expired_holds(session: Session, now: datetime) -> int:
    """Remove held messages whose review period has passed; their decisions stay."""
    expired = sa.delete(Message).where(
        Message.outcome == "hold", Message.held_until.is_not(None), Message.held_until < now
    )
    return int(session.execute(expired).rowcount or 0)  # type: ignore[attr-defined]


def purge_once(sessions: sessionmaker[Session]) -> int:
    """One scheduled run (see app/jobs.py): held messages past their review period."""
    with sessions() as session, session.begin():
        return purge_expired_holds(session, datetime.now(UTC))
