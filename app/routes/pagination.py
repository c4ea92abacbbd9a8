"""Serve: the parameters lists share: opaque cursors for keyset pagination over ids (newest
first), page sizes, ids and times."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated

from fastapi import HTTPException, Path, Query, status
from pydantic import AfterValidator

from app.models import MAX_ID

MAX_PAGE = 100

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size, at most 100.")]
Cursor = Annotated[str | None, Query(max_length=64, description="`next_cursor` of the last page.")]


def decode_cursor(cursor: str | None) -> int | None:
    """The id below which the next page starts."""
    if cursor is None:
        return None
    try:
        value = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode())
    except (ValueError, UnicodeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Malformed cursor.") from None
    if not 1 <= value <= MAX_ID:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Malformed cursor.")
    return value


def encode_cursor(ids: list[int], limit: int) -> str | None:
    if len(ids) < limit:
        return None
    return base64.urlsafe_b64encode(str(ids[-1]).encode()).decode().rstrip("=")


Id = Annotated[int, Path(ge=1, le=MAX_ID, description="An id, as listed.")]
IdFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]


# A day's margin inside the years datetime (and every database) holds, so that turning a time
# into UTC or counting 30 days back from it never leaves the calendar.
EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _in_calendar(value: datetime | None) -> datetime | None:
    """A time given without a zone is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not EARLIEST <= value < LATEST:
        raise ValueError("give a time in the years 0002 to 9998")
    return value


Time = Annotated[
    datetime | None,
    AfterValidator(_in_calendar),
    Query(description="ISO 8601, in the years 0002 to 9998; without a zone, UTC."),
]
