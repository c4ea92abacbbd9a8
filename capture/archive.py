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
from pathlib import Path

from capture.parse import parse_message
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
    outcomes: dict[str, int] = field(default_factory=dict)


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
    # Parsed before the write lock is taken: parsing needs no database.
    messages = [parse_message(raw) for raw in batch]
    with pipeline.connections().begin() as conn:
        lookups = pipeline.lookups(conn)
        lookups.prefetch(messages)
        for message in messages:
            if since is not None and message.date is not None and message.date < since:
                stats.before_horizon += 1
                continue
            result = pipeline.process_in(conn, message, envelope, Channel.IMPORT, lookups=lookups)
            if result.duplicate:
                stats.already_done += 1
                continue
            stats.imported += 1
            stats.outcomes[result.outcome.value] = stats.outcomes.get(result.outcome.value, 0) + 1
