"""Record: group commit, so that concurrent sessions share one fsync and each 250 still waits
for its own message's commit."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from capture.parse import ParsedMessage, parse_message
from capture.pipeline import Envelope, Lookups, Pipeline, Result
from policies.model import Channel
from policies.observe import Ahead

log = logging.getLogger("mailroom.writer")

MAX_BATCH = 64


class Writer(Protocol):
    """What the SMTP listener hands messages to: a writer thread in this process
    (`GroupWriter`) or a writer process of its own (`app.ingest.WriterProcess`)."""

    def submit(self, raw: bytes, envelope: Envelope, channel: Channel) -> asyncio.Future[Result]:
        """The outcome of one message once committed (or the error that kept it out). The
        future is settled by the writer whether or not anyone still awaits it."""
        ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def running(self) -> bool:
        """Whether a message submitted now would reach a writer (for /readyz)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Submission:
    """One message handed to the writer: its bytes, envelope and channel; and what the
    listener already worked out from them, if it did (small messages, for a writer process)."""

    raw: bytes
    envelope: Envelope
    channel: Channel
    parsed: ParsedMessage | None = None  # parse_message(raw)
    ahead: Ahead | None = None  # observe's work on the message alone, done by the listener


@dataclass
class _Job:
    submission: Submission
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Result] = field(repr=False)


class GroupWriter:
    """One writer thread: takes every message that is ready, files each in its own savepoint
    of one transaction, commits once, then answers each submitter."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_batch: int = MAX_BATCH,
        on_batch: Callable[[int], None] = lambda size: None,
        on_begin: Callable[[sa.Connection], object] = lambda conn: None,
    ) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.on_batch = on_batch  # told each batch's size (the metrics' histogram)
        self.on_begin = on_begin  # first in each batch's transaction (see commit_batch)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="group-writer", daemon=True)
        self._thread.start()

    def submit(self, raw: bytes, envelope: Envelope, channel: Channel) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        job = _Job(Submission(raw, envelope, channel), loop, loop.create_future())
        self._queue.put(job)
        return job.future

    @property
    def queue_depth(self) -> int:
        """Messages waiting for the writer thread (approximate, as any queue size)."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    async def aclose(self) -> None:
        """Finish what was submitted, then stop the thread."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(job)
            self.on_batch(len(batch))
            submissions = [job.submission for job in batch]
            outcomes = commit_batch(self.pipeline, submissions, on_begin=self.on_begin)
            for job, outcome in zip(batch, outcomes, strict=True):
                job.loop.call_soon_threadsafe(_settle, job.future, outcome)


def commit_batch(
    pipeline: Pipeline,
    batch: Sequence[Submission],
    *,
    on_begin: Callable[[sa.Connection], object] = lambda conn: None,
) -> list[Result | Exception]:
    """Decide, file and record a batch in one transaction: each message's outcome, or the
    error that kept it from being committed. `on_begin` runs first in the transaction (the
    writer process reads the policy in force there)."""
    # Parsed before the write lock is taken: parsing needs no database.
    messages = [parse_message(s.raw) if s.parsed is None else s.parsed for s in batch]
    try:
        return list(_all_or_nothing(pipeline, batch, messages, on_begin))
    except Exception:
        return _one_by_one(pipeline, batch, messages, on_begin)


def _all_or_nothing(
    pipeline: Pipeline,
    batch: Sequence[Submission],
    messages: list[ParsedMessage],
    on_begin: Callable[[sa.Connection], object],
) -> list[Result]:
    """The common case: every message files cleanly, so none needs a savepoint."""
    with pipeline.connections().begin() as conn:
        on_begin(conn)
        lookups = pipeline.lookups(conn)  # the batch's participants, looked up once each
        lookups.prefetch(messages)
        return [
            pipeline.process_in(
                conn, message, s.envelope, s.channel, lookups=lookups, ahead=s.ahead
            )
            for s, message in zip(batch, messages, strict=True)
        ]


def _one_by_one(
    pipeline: Pipeline,
    batch: Sequence[Submission],
    messages: list[ParsedMessage],
    on_begin: Callable[[sa.Connection], object],
) -> list[Result | Exception]:
    """After a failure: each message in its own savepoint, so that one bad message (or
    a racing duplicate) fails alone and the others still commit together."""
    try:
        with pipeline.connections().begin() as conn:
            on_begin(conn)
            lookups = pipeline.lookups(conn)
            lookups.prefetch(messages)
            return [
                _one(pipeline, conn, lookups, s, message)
                for s, message in zip(batch, messages, strict=True)
            ]
    except Exception as error:  # the commit itself failed: nobody's message is safe
        log.error("group commit of %d failed (%s)", len(batch), type(error).__name__)
        return [error] * len(batch)


def _one(
    pipeline: Pipeline,
    conn: sa.Connection,
    lookups: Lookups,
    submission: Submission,
    message: ParsedMessage,
) -> Result | Exception:
    for attempt in range(2):
        try:
            with conn.begin_nested():
                return pipeline.process_in(
                    conn,
                    message,
                    submission.envelope,
                    submission.channel,
                    lookups=lookups,
                    ahead=submission.ahead,
                )
        except IntegrityError as error:
            if attempt:  # a racing duplicate would have been found by now
                return error
        except Exception as error:
            log.error("message failed in group commit (%s)", type(error).__name__)
            return error
    raise AssertionError("unreachable")


def _settle(future: asyncio.Future[Result], outcome: Result | BaseException) -> None:
    if future.done():  # the session was cancelled; the outcome stands in the database
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
