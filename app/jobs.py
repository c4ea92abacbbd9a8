"""Record: scheduled jobs (retention purge, and later review expiry and webhook retries), run by
one process at a time however many processes share the database.

On PostgreSQL a run holds a session-level advisory lock (`pg_try_advisory_lock`) named after
the job; a process that cannot take it skips that run. The lock belongs to the database session,
so a process killed mid-run releases it with its connection. Jobs are written to be idempotent
(each run does what is due by then), so "never two at once" is all they need. SQLite serves one
process, whose runs follow each other: there a job simply runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass
from enum import StrEnum
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

from app.metrics import Metrics

log = logging.getLogger("mailroom.jobs")
_P = ParamSpec("_P")
_T = TypeVar("_T")


class Run(StrEnum):
    RAN = "ran"
    SKIPPED = "skipped"  # another process holds the job's lock
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    name: str  # kebab-case, stable: it names the lock
    _: KW_ONLY
    every: float  # seconds between runs
    work: Callable[[], int]  # returns how many things it did, for the log


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for the job's advisory lock."""
    digest = hashlib.sha256(f"mailroom-job:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def exclusively(db: sa.Engine, name: str) -> Iterator[bool]:
    """Whether this process may run the job now; the lock is held until the block ends."""
    if db.dialect.name != "postgresql":
        yield True
        return
    key = lock_key(name)
    with db.connect() as conn:
        held = bool(conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key))))
        conn.commit()  # the lock is the session's, not the transaction's
        try:
            yield held
        finally:
            if held:
                conn.scalar(sa.select(sa.func.pg_advisory_unlock(key)))
                conn.commit()


def run_once(db: sa.Engine, job: Job) -> Run:
    """One run of the job, unless another process is running it."""
    with exclusively(db, job.name) as mine:
        if not mine:
            return Run.SKIPPED
        try:
            done = job.work()
        except Exception as error:  # retried at the next tick; the type only, never values
            log.error("job %s failed (%s)", job.name, type(error).__name__)
            return Run.FAILED
    if done:
        log.info("job %s: %d done", job.name, done)
    return Run.RAN


async def run_forever(db: sa.Engine, job: Job, metrics: Metrics) -> None:
    """Run the job now and then every `job.every` seconds until cancelled."""
    while True:
        try:
            result = await to_thread_to_the_end(run_once, db, job)
        except Exception as error:  # the database is away: try again at the next tick
            log.error("job %s could not run (%s)", job.name, type(error).__name__)
            result = Run.FAILED
        metrics.job_runs.labels(job.name, result.value).inc()
        await asyncio.sleep(job.every)


async def to_thread_to_the_end(func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """`asyncio.to_thread`, except that a caller cancelled meanwhile still waits for `func` to
    return before it ends. A thread cannot be cancelled: after a stop that did not wait, a run
    in hand went on using the database engine the stop then closed (a connection left open, or
    an error in that run)."""
    running = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        if not running.cancelled():
            running.exception()  # the caller was cancelled: its run's error is not its to raise
        raise
