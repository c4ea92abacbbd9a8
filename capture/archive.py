"""Receive: import history from an mbox file or a Maildir through the same pipeline.

Resumable by construction: each message's receipt (the employee plus a digest of its bytes)
answers a rerun, which therefore skips what an earlier run committed.
"""

from __future__ import annotations

import enum
import mailbox
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from capture.alone import Alone, message_fault
from capture.parse import ParsedMessage, parse_message
from capture.pipeline import Envelope, Pipeline
from policies.model import Channel

BATCH = 200  # messages per transaction


class ArchiveKind(enum.StrEnum):
    MBOX = "mbox"
    MAILDIR = "maildir"


@dataclass
class ImportStats:
    read: int = 0
    imported: int = 0
    already_done: int = 0  # committed by an earlier run
    before_horizon: int = 0  # older than --since: not read into the pipeline at all
    failed: int = 0  # left out by a fault of their own (capture.alone); a rerun tries again
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n

    def add(self, batch: ImportStats) -> None:
        """A committed batch's counts (`read` is counted as messages are read)."""
        self.imported += batch.imported
        self.already_done += batch.already_done
        self.before_horizon += batch.before_horizon
        self.failed += batch.failed
        for outcome, n in batch.outcomes.items():
            self.count(outcome, n)


def open_archive(path: Path, kind: ArchiveKind) -> tuple[int, Iterator[bytes]]:
    """How many messages the archive holds, and their raw bytes in a stable order."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    box: mailbox.Mailbox[mailbox.Message]
    if kind is ArchiveKind.MBOX:
        if not path.is_file():
            raise ValueError(f"{path} is not an mbox file")
        box = mailbox.mbox(path, create=False)
    else:
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise ValueError(f"{path} is not a Maildir (no cur/ or new/)")
        box = mailbox.Maildir(path, factory=None, create=False)
    keys = sorted(box.keys(), key=str)
    if not keys and kind is ArchiveKind.MBOX and path.stat().st_size > 0:
        raise ValueError(
            f"{path} holds no message: an mbox starts each one with a 'From ' line"
            " (a single .eml is not an mbox)"
        )
    return len(keys), (box.get_bytes(key) for key in keys)


def import_messages(
    pipeline: Pipeline,
    messages: Iterator[bytes],
    *,
    employee: str,
    sent: bool = False,
    since: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportStats:
    """File every message at or after `since` for the employee; commit every BATCH."""
    stats = ImportStats()
    envelope = Envelope(mail_from=employee, sent_folder=sent)
    batch: list[bytes] = []
    for raw in messages:
        stats.read += 1
        batch.append(raw)
        if len(batch) == BATCH:
            _commit(pipeline, batch, envelope, since, stats)
            batch = []
        if progress is not None:
            progress(1)
    if batch:
        _commit(pipeline, batch, envelope, since, stats)
    return stats


def _commit(
    pipeline: Pipeline,
    batch: list[bytes],
    envelope: Envelope,
    since: datetime | None,
    stats: ImportStats,
) -> None:
    """One transaction; if a message's own values fail it, the batch again with each message
    in a savepoint of its own (`capture.alone`): that one is left out, counted as failed and
    without a receipt, so that a rerun tries it again, and the rest is imported."""
    # Parsed before the write lock is taken: parsing needs no database.
    messages = [parse_message(raw) for raw in batch]
    try:
        done = _file(pipeline, messages, envelope, since, alone=False)
    except Exception as error:
        if not message_fault(error, pipeline.connections().dialect):
            raise
        done = _file(pipeline, messages, envelope, since, alone=True)
    stats.add(done)


def _file(
    pipeline: Pipeline,
    messages: list[ParsedMessage],
    envelope: Envelope,
    since: datetime | None,
    *,
    alone: bool,
) -> ImportStats:
    done = ImportStats()
    with pipeline.connections().begin() as conn:
        lookups = pipeline.lookups(conn)
        lookups.prefetch(messages)
        isolated = Alone(conn) if alone else None
        for message in messages:
            if since is not None and message.date is not None and message.date < since:
                done.before_horizon += 1
                continue
            run = partial(
                pipeline.process_in, conn, message, envelope, Channel.IMPORT, lookups=lookups
            )
            result = isolated.file(run) if isolated else run()
            if result is None:
                done.failed += 1
            elif result.duplicate:
                done.already_done += 1
            else:
                done.imported += 1
                done.count(result.outcome.value)
        if isolated is not None:
            isolated.settle()
    return done
