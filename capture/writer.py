"""Record: group commit, so that concurrent sessions share one fsync and each 250 still waits
for its own message's commit."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from capture.parse import ParsedMessage, parse_message
from capture.pipeline import Employees, Envelope, Pipeline, Result
from policies.model import Channel

log = logging.getLogger("mailroom.writer")

MAX_BATCH = 64


@dataclass
class _Job:
    raw: bytes
    envelope: Envelope
    channel: Channel
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
    ) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.on_batch = on_batch  # told each batch's size (the metrics' histogram)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="group-writer", daemon=True)
        self._thread.start()

    async def submit(self, raw: bytes, envelope: Envelope, channel: Channel) -> Result:
        """The committed outcome of one message; raises if it could not be committed."""
        loop = asyncio.get_running_loop()
        job = _Job(raw, envelope, channel, loop, loop.create_future())
        self._queue.put(job)
        return await job.future

    @property
    def queue_depth(self) -> int:
        """Messages waiting for the writer thread (approximate, as any queue size)."""
        return self._queue.qsize()

    def close(self) -> None:
        """Finish what was submitted, then stop the thread."""
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
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        # Parsed before the write lock is taken: parsing needs no database.
        messages = [parse_message(job.raw) for job in batch]
        outcomes: list[Result | BaseException]
        try:
            outcomes = list(self._all_or_nothing(batch, messages))
        except Exception:
            outcomes = self._one_by_one(batch, messages)
        for job, outcome in zip(batch, outcomes, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, outcome)

    def _all_or_nothing(self, batch: list[_Job], messages: list[ParsedMessage]) -> list[Result]:
        """The common case: every message files cleanly, so none needs a savepoint."""
        with self.pipeline.connections().begin() as conn:
            employees = Employees(conn)  # the batch's submitters, looked up once each
            return [
                self.pipeline.process_in(
                    conn, message, job.envelope, job.channel, employees=employees
                )
                for job, message in zip(batch, messages, strict=True)
            ]

    def _one_by_one(
        self, batch: list[_Job], messages: list[ParsedMessage]
    ) -> list[Result | BaseException]:
        """After a failure: each message in its own savepoint, so that one bad message (or
        a racing duplicate) fails alone and the others still commit together."""
        try:
            with self.pipeline.connections().begin() as conn:
                employees = Employees(conn)
                return [
                    self._one(conn, employees, job, message)
                    for job, message in zip(batch, messages, strict=True)
                ]
        except Exception as error:  # the commit itself failed: nobody's message is safe
            log.error("group commit of %d failed (%s)", len(batch), type(error).__name__)
            return [error] * len(batch)

    def _one(
        self, conn: sa.Connection, employees: Employees, job: _Job, message: ParsedMessage
    ) -> Result | BaseException:
        for attempt in range(2):
            try:
                with conn.begin_nested():
                    return self.pipeline.process_in(
                        conn, message, job.envelope, job.channel, employees=employees
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
