"""Record: the SMTP group writer in a process of its own.

In one process the listener's event loop and the writer thread share one GIL: measured on 2
cores, the pair never got past 1.05 cores, and the writer spent a third of its time waiting for
the lock or refilling caches after the loop had it. Here the listener sends each message to a
writer process over a socket pair and awaits its outcome; the writer process runs the same
group commit (`capture.writer.commit_batch`) on its own core.

The promises hold across the gap. A 250 still waits for the writer's commit. If the writer
process dies, every message it had not answered gets 451 (it may have been committed: the
sender's retry is then answered from its receipt, not stored twice), and a new writer starts.
If the listener dies, the writer finishes the batch in hand, sees the socket close and exits.

The link is length-prefixed pickles between two processes of the same program; nothing else
can reach it (an unnamed socket pair, inherited by the child alone).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.db import make_engine, session_factory
from app.logs import LogFormat, configure
from app.runtime import active_version, follow_policy_in, make_pipeline, settle_heap
from app.settings import Settings
from capture.frames import HEADER, frame, read_frame_from
from capture.parse import message_fields, message_from_fields, parse_message
from capture.pipeline import Envelope, Result, without_capture_addresses
from capture.writer import MAX_BATCH, Submission, commit_batch
from policies.loader import load_policy_text
from policies.model import Channel, Outcome
from policies.observe import Ahead, work_ahead

log = logging.getLogger("mailroom.ingest")

READY = "ready"
START_SECONDS = 120.0  # how long the writer process may take to import and open the database
RESTART_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)  # waits between restarts after it died
# Messages up to this size are parsed and observed by the listener (see worked_out): at most
# a millisecond or two of its event loop. Larger ones are left whole to the writer process.
WORK_OUT_BYTES = 32 * 1024


def worked_out(
    raw: bytes, envelope: Envelope, *, capture: frozenset[str] = frozenset()
) -> tuple[Any, ...]:
    """The listener's share of a small message's work, done before it is handed over: its
    parse, and what observe reads from the message alone (its automation facts and personal
    score). None of it needs the database, and it took a quarter of the writer's time, so the
    two processes' loads come out about even (the writer process alone was the bottleneck).
    Sent as plain values; the writer uses them only for the very message they came from.
    `capture`: the capture addresses configured (the pipeline's)."""
    message = parse_message(raw)
    basis = without_capture_addresses(message, envelope, capture=capture)  # a BCC's basis
    return message_fields(message), work_ahead(basis).values()


def submission_from(raw: bytes, envelope: tuple[Any, ...], channel: str, ahead: Any) -> Submission:
    """A submission as the writer process rebuilds it from the listener's frame."""
    if ahead is None:
        return Submission(raw, Envelope(*envelope), Channel(channel))
    fields, values = ahead
    message = message_from_fields(fields, raw)
    worked = Ahead.from_values(message, values)
    return Submission(raw, Envelope(*envelope), Channel(channel), message, worked)


class CommitError(Exception):
    """The writer could not commit the message; the sender is told 451 and retries."""


def _fields(value: Envelope | Result) -> tuple[Any, ...]:
    return tuple(getattr(value, name) for name in value.__slots__)


def _result(values: tuple[Any, ...]) -> Result:
    outcome, *rest = values
    return Result(Outcome(outcome), *rest)


@dataclass
class _Link:
    """One running writer process and the listener's end of its socket."""

    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class WriterProcess:
    """The listener's side: submits messages, settles each 250 when its outcome arrives."""

    def __init__(
        self, settings: Settings, *, on_batch: Callable[[int], None] = lambda size: None
    ) -> None:
        self.settings = settings
        self.on_batch = on_batch  # told each batch's size (the metrics' histogram)
        self.capture = frozenset(settings.capture_addresses)  # never participants
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Result]] = {}
        self._link: _Link | None = None
        self._receiving: asyncio.Task[None] | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the writer process; returns once it has opened the database."""
        self._link = await self._spawn()
        self._receiving = asyncio.create_task(self._receive(self._link))

    @property
    def queue_depth(self) -> int:
        """Messages handed to the writer process and not yet answered."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        link = self._link
        return link is not None and not link.writer.is_closing() and not self._closing

    def submit(self, raw: bytes, envelope: Envelope, channel: Channel) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        link = self._link
        if not self.running or link is None:
            future.set_exception(CommitError("no writer process is running"))
            return future
        job = next(self._ids)
        self._pending[job] = future
        small = len(raw) <= WORK_OUT_BYTES
        ahead = worked_out(raw, envelope, capture=self.capture) if small else None
        link.writer.write(frame((job, raw, _fields(envelope), channel.value, ahead)))
        return future

    async def aclose(self) -> None:
        """Let the writer process finish what was submitted, then stop it."""
        self._closing = True
        if self._restarting is not None:  # no writer running: none to drain
            self._restarting.cancel()
            await asyncio.gather(self._restarting, return_exceptions=True)
        link = self._link
        if link is None:
            return
        link.writer.write(frame(None))  # commit what came before, then exit
        if self._receiving is not None:  # until every answer is in and the socket closes
            await asyncio.gather(self._receiving, return_exceptions=True)
        link.writer.close()
        await link.process.wait()

    async def _spawn(self) -> _Link:
        ours, theirs = socket.socketpair()
        with theirs:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app.ingest", str(theirs.fileno()), pass_fds=[theirs.fileno()]
            )
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
            writer.write(frame(self.settings))
            try:
                started = await asyncio.wait_for(read_frame_from(reader), START_SECONDS) == READY
            except (TimeoutError, asyncio.IncompleteReadError):
                started = False
            if not started:
                raise RuntimeError("the writer process did not start")
        except BaseException:  # not started, or this start was cancelled: leave nothing behind
            if process.returncode is None:
                process.kill()
            if writer is not None:
                writer.close()
            else:
                ours.close()
            await process.wait()
            raise
        log.info("writer process %d started", process.pid)
        return _Link(process, reader, writer)

    async def _receive(self, link: _Link) -> None:
        """Settle futures as outcomes arrive; when the writer process has gone, fail what it
        left unanswered and (unless stopping) start another."""
        while True:
            try:
                answers = await read_frame_from(link.reader)
            except (asyncio.IncompleteReadError, OSError):  # gone: closed, or reset mid-write
                break
            self.on_batch(len(answers))
            for job, failure, result in answers:
                future = self._pending.pop(job, None)
                if future is None or future.done():
                    continue  # its session was cancelled; the outcome stands in the database
                if failure is not None:
                    future.set_exception(CommitError(failure))
                else:
                    future.set_result(_result(result))
        for future in self._pending.values():  # committed or not: the retry will tell
            if not future.done():
                future.set_exception(CommitError("the writer process exited"))
        self._pending.clear()
        if self._closing:
            return
        self._link = None
        link.writer.close()
        code = await link.process.wait()
        log.error("writer process %d exited (status %s); restarting", link.process.pid, code)
        self._restarting = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(RESTART_SECONDS[min(attempt, len(RESTART_SECONDS) - 1)])
            try:
                link = await self._spawn()
            except Exception as error:  # the database is away, say: try again
                log.error("writer process restart failed (%s)", type(error).__name__)
                continue
            self._link = link
            self._receiving = asyncio.create_task(self._receive(link))
            self._restarting = None
            return


class _Frames:
    """The writer process's end of the link: blocking reads of whole frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.start = 0  # where the first unread frame begins

    def next(self) -> Any:
        """The next value; EOFError when the listener has gone."""
        while (value := self._take()) is _NONE:
            self._read(block=True)
        return value

    def batch(self, limit: int) -> list[Any]:
        """One value or more: the next, and then whatever else has already arrived."""
        values = [self.next()]
        while len(values) < limit and values[-1] is not None:
            self._read(block=False)
            value = self._take()
            if value is _NONE:
                break
            values.append(value)
        return values

    def _take(self) -> Any:
        if len(self.buffer) - self.start < HEADER.size:
            return _NONE
        (size,) = HEADER.unpack_from(self.buffer, self.start)
        end = self.start + HEADER.size + size
        if len(self.buffer) < end:
            return _NONE
        value = pickle.loads(memoryview(self.buffer)[self.start + HEADER.size : end])  # noqa: S301
        self.start = end
        return value

    def _read(self, *, block: bool) -> None:
        if self.start:
            del self.buffer[: self.start]
            self.start = 0
        try:
            data = self.sock.recv(1 << 20, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except ConnectionError:  # reset: the listener died with our answers unread
            raise EOFError from None
        if not data:
            if block:
                raise EOFError
            return
        self.buffer += data


_NONE = object()


def serve(sock: socket.socket) -> None:
    """The writer process: batches in, outcomes out, until the listener says stop or goes."""
    frames = _Frames(sock)
    settings: Settings = frames.next()
    configure(LogFormat(settings.log_format), level=settings.log_level)
    db = make_engine(settings.resolved_database_url)
    sessions = session_factory(db)
    readers = session_factory(db, writer=False)
    with readers() as session:
        current = active_version(session)
    if current is None:
        raise RuntimeError("no policy is in force; the listener publishes one before starting")
    pipeline = make_pipeline(settings, sessions, readers, load_policy_text(current.source))
    settle_heap()
    try:
        sock.sendall(frame(READY))
    except OSError:  # the listener died while this process started
        return
    try:
        while True:
            try:
                batch = frames.batch(MAX_BATCH)
            except EOFError:  # the listener is gone: nobody is waiting for an answer
                return
            stop = batch[-1] is None
            jobs: list[Any] = batch[:-1] if stop else batch
            if jobs:
                submissions = [submission_from(*job[1:]) for job in jobs]
                # The policy published last decides, as in one process: read in the batch's
                # own transaction, so the batch is decided under the version in force there.
                outcomes = commit_batch(
                    pipeline, submissions, on_begin=lambda conn: follow_policy_in(conn, pipeline)
                )
                # An error travels as its type only: database errors quote their parameters,
                # which hold message content.
                answers = [
                    (job, type(o).__name__, None)
                    if isinstance(o, Exception)
                    else (job, None, (o.outcome.value, *_fields(o)[1:]))
                    for (job, *_), o in zip(jobs, outcomes, strict=True)
                ]
                try:
                    sock.sendall(frame(answers))
                except OSError:  # the listener is gone; what was committed stays committed
                    return
            if stop:
                return
    finally:
        db.dispose()


def main() -> None:
    # The listener decides when this process stops (its stop frame, or its socket closing):
    # a Ctrl-C in a terminal or a service manager's SIGTERM reaches the whole process group,
    # and must not cut a batch short while the listener still waits for its answers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    try:
        serve(sock)
    except Exception as error:  # the type only, as every log line: no traceback's values
        log.error("writer process failed (%s)", type(error).__name__)
        sys.exit(1)


if __name__ == "__main__":
    main()
