"""Receive: import history from an mbox file or a Maildir through the same pipeline.

Resumable by construction: each message's receipt (the employee plus a digest of its bytes)
answers a rerun, which therefore skips what an earlier run committed.
"""

from __future__ import annotations

import enum
import hashlib
import mailbox
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

from capture.alone import Alone, message_fault
from capture.parse import ParsedMessage, header_section_of, parse_headers, parse_message
from capture.pipeline import Envelope, Pipeline
from policies.model import Channel

BATCH = 200  # messages per transaction
BATCH_BYTES = 64 * 1024 * 1024  # raw bytes of a batch's messages: more commit sooner
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


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
    over_cap: int = 0  # of those imported: over the size cap, decided on their headers
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n

    def add(self, batch: ImportStats) -> None:
        """A committed batch's counts (`read` is counted as messages are read)."""
        self.imported += batch.imported
        self.already_done += batch.already_done
        self.before_horizon += batch.before_horizon
        self.failed += batch.failed
        self.over_cap += batch.over_cap
        for outcome, n in batch.outcomes.items():
            self.count(outcome, n)


@dataclass(frozen=True)
class Archive:
    total: int  # messages to read
    messages: Iterator[bytes]  # their raw bytes, in a stable order
    not_files: int = 0  # Maildir entries that are no regular file: never read


def open_archive(path: Path, kind: ArchiveKind) -> Archive:
    """The archive's messages, ready to be read."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if kind is ArchiveKind.MBOX:
        return _mbox(path)
    return _maildir(path)


def _mbox(path: Path) -> Archive:
    if not path.is_file():
        raise ValueError(f"{path} is not an mbox file")
    # mailbox.mbox skips whatever comes before the first 'From ' line: a file that does not
    # start with one is no mbox, though an .eml with a line of text starting 'From ' reads
    # as one (a message of the lines after it).
    with path.open("rb") as file:
        start = file.read(5)
    if start not in (b"", b"From "):
        raise ValueError(
            f"{path} holds no message: an mbox starts each one with a 'From ' line"
            " (a single .eml is not an mbox)"
        )
    box = mailbox.mbox(path, create=False)
    keys = sorted(box.keys())  # numbers in the file's order (as text, 10 came before 2)
    return Archive(len(keys), (_unquoted(box.get_bytes(key)) for key in keys))


def _unquoted(raw: bytes) -> bytes:
    """The message as it was before an mbox stored it: a line it wrote as '>From ' (a line
    starting 'From ' would have started the next message) starts with 'From ' again, as
    mboxrd readers take it. Python's mailbox writes the '>' but leaves it on reading."""
    return _QUOTED_FROM.sub(rb"\1", raw) if b">From " in raw else raw


def _maildir(path: Path) -> Archive:
    """The regular files in new/ and cur/, but for hidden ones (macOS's ._ files). An
    export is the employee's own: a symbolic link in it may point at anyone's mail or at
    /etc/passwd, and a FIFO would be waited on for ever, so neither is read (nor a device
    or a folder)."""
    folders = [path / "new", path / "cur"]
    if not any(folder.is_dir() for folder in folders):
        raise ValueError(f"{path} is not a Maildir (no cur/ or new/)")
    files: list[Path] = []
    not_files = 0
    for folder in folders:
        if folder.is_symlink():
            raise ValueError(f"{folder} is a symbolic link: a Maildir's own folders are read")
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):  # no message, as mail clients read a Maildir
                    continue
                if entry.is_file(follow_symlinks=False):
                    files.append(Path(entry.path))
                else:
                    not_files += 1
    files.sort(key=lambda file: file.name)
    return Archive(len(files), _read_each(files, folders), not_files)


def _read_each(files: list[Path], folders: list[Path]) -> Iterator[bytes]:
    for listed in files:
        raw = _read_moved(listed, folders)
        if raw is not None:
            yield raw


def _read_moved(listed: Path, folders: list[Path]) -> bytes | None:
    """The file's bytes. A mail client reading the Maildir meanwhile may have moved it (new/
    to cur/) or renamed it (its flags, after ':'): then the file it became is read. One it
    deleted (None) is no longer there to import."""
    try:
        return _read_regular_file(listed)
    except FileNotFoundError:
        unique = listed.name.split(":")[0]
        for folder in folders:
            for name in os.listdir(folder) if folder.is_dir() else ():
                if name.split(":")[0] == unique:
                    return _read_regular_file(folder / name)
        return None


def _read_regular_file(path: Path) -> bytes:
    """The file's bytes; refused should it have been replaced by a link, a FIFO or a device
    since it was listed (O_NOFOLLOW, and O_NONBLOCK so that a FIFO's open does not wait)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError(f"{path} is no longer a regular file")
        return file.read()


def import_messages(
    pipeline: Pipeline,
    messages: Iterator[bytes],
    *,
    employee: str,
    max_bytes: int,
    sent: bool = False,
    since: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    on_begin: Callable[[sa.Connection], object] = lambda conn: None,
) -> ImportStats:
    """File every message at or after `since` for the employee; commit every BATCH, or
    sooner once a batch holds BATCH_BYTES. A message over `max_bytes` (the size cap) is
    decided and filed on its header section alone, as a mailbox's is: its body is never
    parsed. `on_begin` runs first in each batch's transaction (the command reads the policy
    in force there: an import can outlast the version it started under)."""
    stats = ImportStats()
    envelope = Envelope(mail_from=employee, sent_folder=sent)
    commit = partial(_commit, pipeline, envelope=envelope, since=since, on_begin=on_begin)
    batch: list[_Read] = []
    held = 0
    for raw in messages:
        stats.read += 1
        read = _Read(raw, len(raw)) if len(raw) <= max_bytes else _over_cap(raw)
        batch.append(read)
        held += len(read.raw)
        if len(batch) == BATCH or held >= BATCH_BYTES:
            commit(batch, stats)
            batch, held = [], 0
        if progress is not None:
            progress(1)
    if batch:
        commit(batch, stats)
    return stats


class _Read(NamedTuple):
    raw: bytes  # the message, or its header section alone
    size: int  # the whole message's, for the policy (`larger-than`) either way
    digest: str | None = None  # the whole message's, where `raw` is its header section

    @property
    def whole(self) -> bool:
        return self.digest is None

    def parsed(self) -> ParsedMessage:
        if self.digest is None:
            return parse_message(self.raw)
        # Its receipt is keyed by the whole message's digest, as when it is read whole: a
        # rerun under another size cap, or after a release that read it whole, knows it.
        return replace(parse_headers(self.raw, size=self.size), digest=self.digest)


def _over_cap(raw: bytes) -> _Read:
    return _Read(header_section_of(raw), len(raw), hashlib.sha256(raw).hexdigest())


def _commit(
    pipeline: Pipeline,
    batch: list[_Read],
    stats: ImportStats,
    *,
    envelope: Envelope,
    since: datetime | None,
    on_begin: Callable[[sa.Connection], object],
) -> None:
    """One transaction; if a message's own values fail it, the batch again with each message
    in a savepoint of its own (`capture.alone`): that one is left out, counted as failed and
    without a receipt, so that a rerun tries it again, and the rest is imported."""
    # Parsed before the write lock is taken: parsing needs no database.
    messages = [(read.parsed(), read.whole) for read in batch]
    file = partial(_file, pipeline, messages, envelope, since, on_begin=on_begin)
    try:
        done = file(alone=False)
    except Exception as error:
        if not message_fault(error, pipeline.connections().dialect):
            raise
        done = file(alone=True)
    stats.add(done)


def _file(
    pipeline: Pipeline,
    messages: list[tuple[ParsedMessage, bool]],
    envelope: Envelope,
    since: datetime | None,
    *,
    on_begin: Callable[[sa.Connection], object],
    alone: bool,
) -> ImportStats:
    done = ImportStats()
    with pipeline.connections().begin() as conn:
        on_begin(conn)
        lookups = pipeline.lookups(conn)
        lookups.prefetch(message for message, _ in messages)
        isolated = Alone(conn) if alone else None
        for message, whole in messages:
            if since is not None and message.date is not None and message.date < since:
                done.before_horizon += 1
                continue
            run = partial(
                pipeline.process_in,
                conn,
                message,
                envelope,
                Channel.IMPORT,
                lookups=lookups,
                headers_only=not whole,
                body_on_request=False,  # over the cap: decided on the headers, whatever they say
            )
            result = isolated.file(run) if isolated else run()
            if result is None:
                done.failed += 1
            elif result.duplicate:
                done.already_done += 1
            else:
                done.imported += 1
                done.over_cap += not whole
                done.count(result.outcome.value)
        if isolated is not None:
            isolated.settle()
    return done
