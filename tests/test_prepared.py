"""Prepared statements bind values as SQLAlchemy would, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import UTCDateTime
from app.prepared import Prepared

metadata = sa.MetaData()
stamps = sa.Table(
    "test_stamps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime()),
    sa.Column("until", UTCDateTime()),
)
INSERT = Prepared(sa.insert(stamps), keys=("id", "at", "until"))
SELECT = Prepared(sa.select(stamps.c.at, stamps.c.until).order_by(stamps.c.id))


@pytest.fixture
def conn(sessions: sessionmaker[Session]) -> Iterator[sa.Connection]:
    engine = sessions.kw["bind"]
    metadata.create_all(engine)
    with engine.begin() as connection:
        yield connection
    metadata.drop_all(engine)


def test_timestamps_bind_as_the_same_instant_whatever_their_offset_and_however_often(
    conn: sa.Connection,
) -> None:
    instant = datetime(2026, 11, 23, 9, 30, 0, 123456, tzinfo=UTC)
    offsets = [timezone(timedelta(hours=h)) for h in (0, 1, -5, 13)]
    # Over 300 distinct instants too, so that remembered conversions are forgotten on the way.
    later = [instant + timedelta(seconds=s) for s in range(300)]
    same_wall_clock = [instant.replace(tzinfo=o) for o in offsets]  # four instants
    rows = [instant.astimezone(o) for o in offsets] + same_wall_clock + later
    rows += [instant.astimezone(offsets[2]), *same_wall_clock]
    for n, at in enumerate(rows):
        INSERT.run(conn, {"id": n, "at": at, "until": rows[-1 - n]})

    stored = SELECT.rows(conn)

    assert [at for at, _ in stored] == rows
    assert [until for _, until in stored] == rows[::-1]
    assert all(at.utcoffset() == timedelta(0) for at, _ in stored)  # read back in UTC


def test_a_naive_timestamp_is_refused_every_time(conn: sa.Connection) -> None:
    naive = datetime(2026, 11, 23, 9, 30)
    for n in range(2):
        with pytest.raises(ValueError, match="naive"):
            INSERT.run(conn, {"id": n, "at": naive, "until": None})


def test_a_column_the_caller_must_give_is_named_when_missing(conn: sa.Connection) -> None:
    at = datetime(2026, 11, 23, tzinfo=UTC)
    with pytest.raises(KeyError, match="until"):
        INSERT.run(conn, {"id": 1, "at": at})
