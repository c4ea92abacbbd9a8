"""Record: what the policy says must not be kept any longer is removed, on a schedule."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import Message

log = logging.getLogger("mailroom.retention")
PURGE_EVERY = 600.0  # seconds


def purge_expired_holds(session: Session, now: datetime) -> int:
    """Remove held messages whose review period has passed; their decisions stay."""
    expired = sa.delete(Message).where(
        Message.outcome == "hold", Message.held_until.is_not(None), Message.held_until < now
    )
    return int(session.execute(expired).rowcount or 0)  # type: ignore[attr-defined]


async def purge_forever(sessions: sessionmaker[Session], *, every: float = PURGE_EVERY) -> None:
    """Run the purge now and then every `every` seconds until cancelled."""
    while True:
        try:
            removed = await asyncio.to_thread(_purge_once, sessions)
            if removed:
                log.info("removed %d held messages past their review period", removed)
        except Exception as error:  # a failed run is retried at the next tick
            log.error("retention purge failed (%s)", type(error).__name__)
        await asyncio.sleep(every)


def _purge_once(sessions: sessionmaker[Session]) -> int:
    with sessions() as session, session.begin():
        return purge_expired_holds(session, datetime.now(UTC))
