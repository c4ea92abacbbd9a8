"""File: which conversation a kept message joins, by its references, else by its thread key."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import crm
from app.models import Message, Thread
from app.prepared import Prepared, PreparedIn
from app.schemas import ThreadOut
from app.security import Principal
from capture.keyed import keyed_digest
from capture.parse import ParsedMessage
from capture.threads import thread_key

_BY_REFERENCE = PreparedIn(
    lambda binds: (
        sa.select(Message.thread_id)
        .where(Message.message_id.in_(binds), Message.thread_id.is_not(None))
        .order_by(Message.id)
        .limit(1)
    )
)
_BY_KEY = Prepared(sa.select(Thread.id).where(Thread.key == sa.bindparam("key")))
_INSERT = Prepared(
    sa.insert(Thread).returning(Thread.id), keys=("key", "created_at", "last_message_at")
)
_SEEN = sa.bindparam("seen", type_=Thread.last_message_at.type)
_TOUCH = Prepared(
    sa.update(Thread)
    .where(Thread.id == sa.bindparam("thread"), Thread.last_message_at < _SEEN)
    .values(last_message_at=_SEEN)
)


def file_thread(conn: sa.Connection, message: ParsedMessage, secret: bytes, now: datetime) -> int:
    """The thread this message joins: the one a message it names (In-Reply-To, References)
    is in, else the one with its thread key, else a new one. Keys are stored as keyed
    digests: a subject-based key must not let anyone guess the subject of a thread."""
    key = thread_key(message)
    referenced = [i for i in key.ids if i != message.message_id]
    found = _BY_REFERENCE.rows(conn, referenced) if referenced else []
    digest = keyed_digest(secret, key.key.encode("utf-8", "replace")).hex()
    thread = found[0][0] if found else _BY_KEY.scalar(conn, {"key": digest})
    seen = message.date or now
    if thread is None:
        values = {"key": digest, "created_at": now, "last_message_at": seen}
        return int(_INSERT.scalar(conn, values))
    _TOUCH.run(conn, {"thread": thread, "seen": seen})
    return int(thread)


_IDS_A_STATEMENT = 1000  # SQLite takes 32,766 bound parameters a statement, PostgreSQL 65,535


def remove_emptied(session: Session, threads: Iterable[int | None]) -> None:
    """Remove those of the threads (of messages just removed) that no message is in any
    longer: such a thread holds nothing but its key, a digest of that mail, and its dates."""
    in_use = sa.exists().where(Message.thread_id == Thread.id)
    ids = sorted({t for t in threads if t is not None})
    for start in range(0, len(ids), _IDS_A_STATEMENT):  # each id is a bound parameter
        chunk = ids[start : start + _IDS_A_STATEMENT]
        session.execute(sa.delete(Thread).where(Thread.id.in_(chunk), ~in_use))


def read_thread(session: Session, principal: Principal, thread_id: int) -> ThreadOut | None:
    """A thread with the messages this principal may see; None if they may see none. Its
    times are those of these messages too: a colleague's private or held mail in the thread
    must not say when it came."""
    visible = crm.visible_messages(principal).where(Message.thread_id == thread_id)
    rows = session.scalars(visible.order_by(Message.sent_at, Message.id).limit(500)).all()
    if not rows:
        return None
    seen = visible.subquery()
    first, last = session.execute(
        sa.select(
            sa.func.min(seen.c.created_at),
            sa.func.max(sa.func.coalesce(seen.c.sent_at, seen.c.created_at)),
        )
    ).one()
    return ThreadOut(
        id=thread_id,
        created_at=first,
        last_message_at=last,
        messages=crm.render_messages(session, principal, rows),
    )
