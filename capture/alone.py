"""Record: a batch's messages filed one savepoint each, so that a message's own fault is its own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

log = logging.getLogger("mailroom.alone")

T = TypeVar("T")


def message_fault(error: BaseException, dialect: Dialect) -> bool:
    """Whether filing failed on what one message holds: the database refused its values
    (a data or integrity error) or they would not convert (ValueError, OverflowError). Not a
    fault of the database itself (disk full, connection lost, a lock, a missing table: the
    driver's operational, programming and internal errors), which must roll the batch back
    to be retried later, never skip mail. Errors come wrapped by SQLAlchemy, or bare from the
    prepared statements (`app/prepared.py`)."""
    if isinstance(error, sa.exc.StatementError) and error.orig is not None:
        error = error.orig
    dbapi = dialect.loaded_dbapi
    if isinstance(error, (dbapi.DataError, dbapi.IntegrityError)):
        return True
    if isinstance(error, (dbapi.Error, sa.exc.SQLAlchemyError)):
        return False
    return isinstance(error, (ValueError, OverflowError))


class Alone:
    """Files each message of a batch in its own savepoint; one that fails by its own fault
    is left out (counted, and logged by type alone: a database error quotes the values it
    was given), and the rest of the batch commits."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.filed = 0
        self.failures: list[Exception] = []

    def file(self, run: Callable[[], T]) -> T | None:
        """What `run` returns, or None when the message failed by its own fault."""
        try:
            with self.conn.begin_nested():
                result = run()
        except Exception as error:
            if not message_fault(error, self.conn.dialect):
                raise
            log.warning("a message could not be filed and was left out (%s)", type(error).__name__)
            self.failures.append(error)
            return None
        self.filed += 1
        return result

    def settle(self) -> None:
        """Before the commit: if no message of the batch filed, the fault cannot be told
        from the database's, and the batch is rolled back to be tried again."""
        if self.failures and not self.filed:
            raise self.failures[0]
