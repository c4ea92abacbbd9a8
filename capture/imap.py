"""Receive: read a mailbox over IMAP, headers first, without ever changing it.

Per folder: EXAMINE (read-only), UIDVALIDITY plus the last UID done, then for each batch of
new UIDs `BODY.PEEK[HEADER]` and `RFC822.SIZE`. Each message is decided on its headers; only
a decision the body could change fetches `BODY.PEEK[]`. The folder's new position is written
in the same transaction as the batch's outcomes, so a crash repeats a batch (whose receipts
answer for it) and never skips one. Only integers and configured folder names go into IMAP
commands: nothing that came from a message.
"""

from __future__ import annotations

import contextlib
import imaplib
import io
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import partial
from operator import methodcaller
from typing import Any, NamedTuple, TypeVar, cast

import sqlalchemy as sa
from imapclient import IMAPClient, imap_utf7
from imapclient.exceptions import IMAPClientError

from app.metrics import Metrics
from app.models import Mailbox, MailboxFolder
from capture.alone import Alone, message_fault
from capture.header_fetch import fetch_header_sections
from capture.header_helper import HEADER_PARSING, Parsed
from capture.parse import HEADER_CAP, ParsedMessage, parse_message
from capture.pipeline import BodyNeededError, Envelope, Lookups, Pipeline, Result
from policies.model import Channel, Outcome
from policies.observe import Ahead

log = logging.getLogger("mailroom.imap")
T = TypeVar("T")

BATCH = 500
BODY_CHUNK_BYTES = 32 * 1024 * 1024  # bodies fetched per command, at most
COMMAND_TIMEOUTS = 10  # one command's whole answer may take this many socket timeouts
MAX_LINE = 1_000_000  # bytes in one line of an answer, as imaplib allows


class MailboxError(Exception):
    """The server refused or broke the protocol; the sync retries later."""


class FolderError(MailboxError):
    """One folder could not be synced this time; the connection still works, so the
    mailbox's other folders go on. Its text names no message."""


@dataclass(frozen=True)
class MailboxConfig:
    """What a sync needs to know about a mailbox; the password is never in its repr."""

    id: int
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    folders: tuple[str, ...]
    sent_folders: frozenset[str] = frozenset()
    tls: str = "tls"
    employee: str = ""  # the owner's address; empty for a journal mailbox
    journal: bool = False
    since: date | None = None


@dataclass
class SyncStats:
    """Counters of one sync, added to the mailbox's own in the same transactions."""

    messages: int = 0
    bodies_fetched: int = 0
    bodies_skipped: int = 0  # decided on headers alone: the body never left the server
    bodies_for_dropped: int = 0  # bodies read whose message the policy then dropped
    over_cap: int = 0
    failed: int = 0  # left out by a fault of their own (capture.alone)
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1


def connect(config: MailboxConfig, *, max_bytes: int, timeout: float = 60.0) -> IMAPClient:
    """Log in; implicit TLS, STARTTLS or (loopback tests only) plain."""
    context = ssl.create_default_context()
    client = IMAPClient(
        config.host,
        port=config.port,
        ssl=config.tls == "tls",
        ssl_context=context if config.tls == "tls" else None,
        timeout=timeout,
    )
    try:
        _Bounds(client._imap, max_bytes, seconds=COMMAND_TIMEOUTS * timeout).install(client._imap)
        if config.tls == "starttls":
            client.starttls(context)
        client.login(config.username, config.password)
    except BaseException:
        close(client)
        raise
    return client


def close(client: IMAPClient) -> None:
    """Log out politely if the connection still works; close the socket in any case."""
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()


class _Bounds:
    """imaplib reads whatever the server sends: every literal it announces, and any number
    of lines and literals before the tagged answer. This bounds what one command's answer
    may hold: any literal at the size cap plus a header section's worth (a header section
    too: a message's sender writes it, and one over HEADER_CAP, cut to it when parsed, must
    not stop the mailbox at that message for good), and all lines and literals of one answer
    together at a body chunk plus one message and at `seconds` (each line resets the
    socket's timeout: a server chattering untagged lines would otherwise hold the sync
    forever; IDLE, one command, lasts at most `app.mailboxes.IDLE_SECONDS`, well within).
    An honest answer is always
    within; past a bound the connection is given up (`MailboxError`), its answer half read.

    The deadline holds inside one line or literal too: each read from the socket waits at
    most until the deadline, so a server dripping a byte at a time (each byte would reset the
    timeout) is given up on time."""

    _HEADER_LITERAL = re.compile(rb"BODY\[HEADER\](?:<0>)? \{[0-9]+\}\r\n\Z", re.IGNORECASE)

    def __init__(self, connection: imaplib.IMAP4, max_bytes: int, *, seconds: float) -> None:
        self.literal = max_bytes + HEADER_CAP
        self.answer = BODY_CHUNK_BYTES + self.literal
        self.seconds = seconds
        self.used = 0
        self.deadline = time.monotonic() + seconds  # the greeting's
        self.line = b""
        self.connection = connection  # its socket and file change at STARTTLS
        self._command = connection._command

    def install(self, connection: imaplib.IMAP4) -> None:
        connection.read = self.read  # type: ignore[method-assign]
        connection.readline = self.readline  # type: ignore[method-assign]
        connection._command = self.command  # type: ignore[attr-defined]

    def command(self, name: str, *args: Any) -> Any:
        self.used = 0  # a new command: a new answer to bound
        self.deadline = time.monotonic() + self.seconds
        return self._command(name, *args)

    def readline(self) -> bytes:
        """imaplib's readline (a line of at most MAX_LINE bytes), read within the
        deadline."""
        line = bytearray()
        while not line.endswith(b"\n") and len(line) <= MAX_LINE:
            ready = self._within_deadline(methodcaller("peek", 1))  # one socket read at most
            if not ready:  # the connection ended; imaplib sees the short line
                break
            end = ready.find(b"\n")
            wanted = len(ready) if end < 0 else end + 1
            line += self._file.read(min(wanted, MAX_LINE + 1 - len(line)))
        if len(line) > MAX_LINE:
            raise self.connection.error(f"got more than {MAX_LINE} bytes")
        self.line = bytes(line)
        self._spend(len(self.line))
        return self.line

    def read(self, size: int) -> bytes:
        header = self._HEADER_LITERAL.search(self.line) is not None
        if size > self.literal:
            kind = "header-section literal" if header else "literal"
            raise MailboxError(f"the server announced a {size}-byte {kind}")
        self._spend(size)
        data = bytearray()
        while len(data) < size:
            chunk = self._within_deadline(methodcaller("read1", size - len(data)))
            if not chunk:  # the connection ended; imaplib sees the short literal
                break
            data += chunk
        return bytes(data)

    @property
    def _file(self) -> io.BufferedReader:
        return cast(io.BufferedReader, self.connection.file)  # imaplib's sock.makefile("rb")

    def _within_deadline(self, read: Callable[[io.BufferedReader], bytes]) -> bytes:
        """`read(file)`, one read from the socket at most, waiting no longer than the
        socket's timeout nor past the deadline. A non-blocking socket (imapclient's
        idle_check drains one so) never waits: it is read as it is."""
        sock, file = self.connection.sock, self._file
        timeout = sock.gettimeout()
        if timeout == 0.0:
            return read(file)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._overtime()
        if timeout is not None and timeout <= left:  # the timeout alone ends it in time
            return read(file)
        sock.settimeout(left)
        try:
            return read(file)
        except TimeoutError:
            if time.monotonic() >= self.deadline:
                raise self._overtime() from None
            raise
        finally:
            sock.settimeout(timeout)

    def _spend(self, size: int) -> None:
        self.used += size
        if self.used > self.answer:
            raise MailboxError(f"the server's answer to one command passed {self.answer} bytes")
        if time.monotonic() > self.deadline:
            raise self._overtime()

    def _overtime(self) -> MailboxError:
        return MailboxError(f"the server's answer to one command took over {self.seconds:g} s")


class _Waiting(NamedTuple):
    """A message whose body the decision waits for, and what its receipt is keyed by."""

    uid: int
    size: int
    envelopes: list[Envelope]
    header_digest: str


class FolderSync:
    """Syncs the folders of one mailbox over one connection, into one pipeline."""

    def __init__(
        self,
        client: IMAPClient,
        pipeline: Pipeline,
        config: MailboxConfig,
        *,
        max_bytes: int,
        stop: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
        metrics: Metrics | None = None,
        on_begin: Callable[[sa.Connection], object] = lambda conn: None,
    ) -> None:
        self.client = client
        self.pipeline = pipeline
        self.config = config
        self.max_bytes = max_bytes
        self.stop = stop or threading.Event()
        self.progress = progress
        self.stats = SyncStats()
        self.sent_folders = config.sent_folders  # and those the server flags \Sent
        self._server: ThreadPoolExecutor | None = None  # while a folder syncs
        self._alone: Alone | None = None  # while a batch is filed one message at a time
        self.metrics = metrics  # told each outcome once its batch is committed
        self.on_begin = on_begin  # first in each batch's transaction (the policy in force)
        self._results: list[Result] = []  # the outcomes of the batch in hand
        self.backlog: dict[str, int] = {}  # each folder's messages not yet synced, last seen

    def sync_all(self) -> SyncStats:
        """Every folder in turn. One the server cannot give this time (gone, renamed, a body
        left out) stops not the others: the failures are raised together at the end, so the
        mailbox shows its error. A broken connection or a database fault stops at once. Only
        a sync that went through every folder is the mailbox's last sync."""
        failed: list[str] = []
        self.sent_folders = self.config.sent_folders | self._flagged_sent()
        for folder in self.config.folders:
            if self.stop.is_set():
                break
            try:
                self.sync_folder(folder)
            except (FolderError, IMAPClientError) as error:
                if isinstance(error, imaplib.IMAP4.abort):
                    raise  # the connection is gone: no other folder can be read on it
                log.warning("mailbox %d, folder %r: %s", self.config.id, folder, _kind(error))
                failed.append(f"{folder}: {_kind(error)}")
        if failed:
            raise FolderError(
                f"{len(failed)} of {len(self.config.folders)} folders failed: " + "; ".join(failed)
            )
        if not self.stop.is_set():  # stopped (a pause, a shutdown): folders were left unread
            self._mark_synced()
        return self.stats

    def _flagged_sent(self) -> frozenset[str]:
        """The configured folders the server's LIST flags `\\Sent` (RFC 6154 special use),
        whatever their names: "Gesendete Elemente", "[Gmail]/Sent Mail". Names are compared
        as the server writes them (modified UTF-7, as `select_folder` sends ours), never
        decoded: another folder's name that is no modified UTF-7 ("R&D" unescaped) is no
        reason to fail the sync, nor is a LIST answer that cannot be read."""
        wire = {imap_utf7.encode(folder): folder for folder in self.config.folders}
        try:
            listed = self._list_as_written()
        except (IMAPClientError, ValueError) as error:
            if isinstance(error, imaplib.IMAP4.abort):
                raise
            log.warning("mailbox %d: LIST refused: %s", self.config.id, _kind(error))
            return frozenset()
        return frozenset(
            wire[name]
            for flags, name in listed
            if name in wire and any(f.lower() == b"\\sent" for f in flags)
        )

    def _list_as_written(self) -> list[tuple[tuple[bytes, ...], bytes]]:
        """Each folder's flags and name as the server wrote it (imapclient decodes names
        unless told not to, and raises on one that does not decode)."""
        encode, self.client.folder_encode = self.client.folder_encode, False
        try:
            listed = self.client.list_folders()
        finally:
            self.client.folder_encode = encode
        # A name of digits alone comes back as text.
        return [
            (flags, name.encode() if isinstance(name, str) else name) for flags, _, name in listed
        ]

    def sync_folder(self, folder: str) -> None:
        selected = self.client.select_folder(folder, readonly=True)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        known_validity, last_uid = self._position(folder)
        if known_validity != uidvalidity:
            # A new UIDVALIDITY renumbers the folder: read it all again; the receipts
            # (keyed by content digest) recognise every message already decided.
            last_uid = 0
        uids = sorted(u for u in self._new_uids(last_uid) if u > last_uid)
        self._set_pending(folder, len(uids))
        done = 0
        # One thread talks to the server, in order: while a batch is decided, the next
        # batch's headers are already on their way (a stop waits for them, then returns).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailroom-imap") as server:
            self._server = server
            try:
                ahead = server.submit(self._fetch_headers, uids[:BATCH]) if uids else None
                while ahead is not None and not self.stop.is_set():
                    fetched, taken = ahead.result()
                    batch, following = uids[done : done + taken], uids[done + taken :][:BATCH]
                    ahead = server.submit(self._fetch_headers, following) if following else None
                    self._sync_batch(
                        folder, uidvalidity, batch, fetched, remaining=len(uids) - done
                    )
                    done += taken
                    if self.progress is not None:
                        self.progress(done, len(uids))
            finally:
                self._server = None
        if not uids and known_validity != uidvalidity:
            with self.pipeline.connections().begin() as conn:
                self._advance(conn, folder, uidvalidity, last_uid, pending=0, before=self.stats)
            self.backlog[folder] = 0

    def has_new(self, folder: str) -> bool:
        """Whether the selected folder holds a UID past the committed position."""
        _, last_uid = self._position(folder)
        return any(u > last_uid for u in self._new_uids(last_uid))

    def _new_uids(self, last_uid: int) -> list[int]:
        criteria: list[Any] = ["UID", f"{last_uid + 1}:*"]
        if self.config.since is not None:
            criteria += ["SINCE", _search_date(self.config.since)]
        return [int(u) for u in self.client.search(criteria)]

    def _fetch_headers(self, uids: Sequence[int]) -> tuple[list[Parsed], int]:
        """The messages of the first of `uids` from their header sections, in UID order,
        with the size the server reports; one expunged since the search is simply absent.
        Parsed here, on the thread that talks to the server, while the batch before is
        decided. Also how many of `uids` they account for: as many as one answer's bound
        holds (a body chunk) of their header sections, at least one.

        Each section's first `BODY_CHUNK_BYTES / BATCH` bytes are asked for (so a whole batch
        fits any headers); a section that fills them (a long Received trail, thousands of
        recipients) is asked for again whole, up to HEADER_CAP, and counted at that."""
        glance = BODY_CHUNK_BYTES // BATCH
        fetched = fetch_header_sections(self.client, uids, limit=glance)
        taken, whole, held = 0, [], 0
        for uid in uids:
            if uid in fetched:
                header, size = _section(fetched[uid])
                cut = len(header) >= glance
                cost = min(size, HEADER_CAP) if cut else len(header)
                if taken and held + cost > BODY_CHUNK_BYTES:
                    break
                held += cost
                whole += [uid] if cut else []
            taken += 1
        fetched.update(fetch_header_sections(self.client, whole, limit=HEADER_CAP))
        sections = [(uid, *_section(data)) for uid, data in _present(fetched, uids[:taken])]
        return HEADER_PARSING.parse(sections), taken

    def _fetch(self, uids: list[int], items: list[str]) -> dict[int, dict[bytes, Any]]:
        """A FETCH on the thread that talks to the server, after what it already has to do."""
        return self._on_server(self.client.fetch, uids, items)

    def _still_there(self, uids: list[int]) -> list[int]:
        """Those of `uids` the folder still holds (`UID SEARCH UID …`), asked on the thread
        that talks to the server."""
        criteria = ["UID", ",".join(str(int(uid)) for uid in uids)]
        return [int(u) for u in self._on_server(self.client.search, criteria)]

    def _on_server(self, command: Callable[..., T], *args: Any) -> T:
        """`command(*args)` on the thread that talks to the server, after what it already
        has to do (here, when no folder is syncing)."""
        if self._server is None:
            return command(*args)
        return self._server.submit(command, *args).result()

    def _sync_batch(
        self,
        folder: str,
        uidvalidity: int,
        uids: Sequence[int],
        messages: list[Parsed],
        *,
        remaining: int,
    ) -> None:
        """The batch in one transaction; if a message's own values fail it, again with each
        message in a savepoint of its own (`capture.alone`, bodies fetched again), so that
        the folder moves past the one left out. A fault of the database rolls it back."""
        counted = deepcopy(self.stats)
        try:
            self._record_batch(folder, uidvalidity, uids, messages, remaining=remaining)
        except Exception as error:
            self.stats = counted  # the batch rolled back: none of it counts
            if not message_fault(error, self.pipeline.connections().dialect):
                raise
            self._record_batch(folder, uidvalidity, uids, messages, remaining=remaining, alone=True)
        finally:
            self._alone = None

    def _record_batch(
        self,
        folder: str,
        uidvalidity: int,
        uids: Sequence[int],
        messages: list[Parsed],
        *,
        remaining: int,
        alone: bool = False,
    ) -> None:
        sent = folder in self.sent_folders
        before = replace(self.stats, outcomes={})
        self._results = []
        with self.pipeline.connections().begin() as conn:
            self.on_begin(conn)
            self._alone = Alone(conn) if alone else None
            lookups = self.pipeline.lookups(conn)
            lookups.prefetch(message for _, message, _, _ in messages)
            needs_body: list[_Waiting] = []
            for uid, message, size, ahead in messages:
                envelopes = self._envelopes(lookups, message, sent=sent)
                self.stats.messages += 1
                waiting = self._decide_on_headers(lookups, message, envelopes, ahead)
                if not waiting:
                    self.stats.bodies_skipped += 1
                elif size > self.max_bytes:
                    self.stats.over_cap += 1  # never downloaded: decided and filed on headers
                    for envelope in waiting:
                        self._file(lookups, message, envelope, header_digest=None)
                else:
                    needs_body.append(_Waiting(uid, size, waiting, message.digest))
            self._decide_with_bodies(lookups, needs_body)
            if self._alone is not None:
                self._alone.settle()
            pending = remaining - len(uids)
            self._advance(conn, folder, uidvalidity, uids[-1], pending=pending, before=before)
        self.backlog[folder] = pending
        self._count_committed()

    def _count_committed(self) -> None:
        if self.metrics is None:
            return
        for result in self._results:
            self.metrics.count_message(
                channel="imap",
                outcome=result.outcome.value,
                rules=result.rules,
                duplicate=result.duplicate,
            )

    def _decide_on_headers(
        self,
        lookups: Lookups,
        message: ParsedMessage,
        envelopes: list[Envelope],
        ahead: Ahead | None,
    ) -> list[Envelope]:
        """Decide for each envelope on the headers; return those the body could change.
        `ahead`: the header helper's work on the message alone."""
        waiting = []
        for envelope in envelopes:
            try:  # raised before anything is written: no savepoint needed
                result = self._process(lookups, message, envelope, headers_only=True, ahead=ahead)
                if result is not None:
                    self.stats.count(result.outcome)
            except BodyNeededError:
                waiting.append(envelope)
        return waiting

    def _decide_with_bodies(self, lookups: Lookups, needs_body: list[_Waiting]) -> None:
        for chunk in _by_size(needs_body, BODY_CHUNK_BYTES):
            bodies = self._fetch([w.uid for w in chunk], ["BODY.PEEK[]"])
            missing = [w.uid for w in chunk if bodies.get(w.uid, {}).get(b"BODY[]") is None]
            if missing and self._still_there(missing):
                # Not expunged: the server failed to answer. Skipping would move the folder
                # past mail never decided; the batch rolls back and is tried again.
                raise FolderError("the server left out the body of a message still there")
            for waiting in chunk:
                raw = bodies.get(waiting.uid, {}).get(b"BODY[]")
                if raw is None:
                    continue  # expunged meanwhile (the search above says so)
                self.stats.bodies_fetched += 1
                message = parse_message(bytes(raw))
                dropped = [
                    self._file(lookups, message, e, header_digest=waiting.header_digest)
                    for e in waiting.envelopes
                ]
                if all(outcome is Outcome.DROP for outcome in dropped):
                    self.stats.bodies_for_dropped += 1

    def _file(
        self,
        lookups: Lookups,
        message: ParsedMessage,
        envelope: Envelope,
        *,
        header_digest: str | None,
    ) -> Outcome | None:
        """File `message`, read whole (given its `header_digest`, which keys its receipt) or
        its header section alone (None): over the size cap, decided on its headers whatever
        its body says, and recorded as such."""
        result = self._process(
            lookups,
            message,
            envelope,
            headers_only=header_digest is None,
            body_on_request=False,
            header_digest=header_digest,
        )
        if result is None:
            return None
        self.stats.count(result.outcome)
        return result.outcome

    def _process(
        self,
        lookups: Lookups,
        message: ParsedMessage,
        envelope: Envelope,
        *,
        headers_only: bool,
        body_on_request: bool = True,
        ahead: Ahead | None = None,
        header_digest: str | None = None,
    ) -> Result | None:
        """The pipeline's result; None for a message left out by a fault of its own."""
        run = partial(
            self.pipeline.process_in,
            lookups.conn,
            message,
            envelope,
            Channel.IMAP,
            headers_only=headers_only,
            body_on_request=body_on_request,
            lookups=lookups,
            ahead=ahead,
            header_digest=header_digest,
        )
        result = run() if self._alone is None else self._alone.file(run)
        if result is None:
            self.stats.failed += 1
        else:
            self._results.append(result)
        return result

    def _envelopes(self, lookups: Lookups, message: ParsedMessage, *, sent: bool) -> list[Envelope]:
        """Whom the message is captured for: the owner, or in a journal mailbox each employee
        taking part, in From, To or Cc (a sender's copy counts as sent; Reply-To is the
        sender's to write, and names no one who took part); nobody known gives a refusal
        record."""
        if not self.config.journal:
            return [Envelope(mail_from=self.config.employee, sent_folder=sent)]
        sender = message.sender.address if message.sender else ""
        found: dict[int, Envelope] = {}
        for address in message.from_ + message.to + message.cc:
            submitter = lookups.find(address.address)
            if submitter is not None and submitter.employee_id not in found:
                as_sender = address.address == sender
                found[submitter.employee_id] = Envelope(address.address, sent_folder=as_sender)
        return list(found.values()) or [Envelope(mail_from="")]

    def _position(self, folder: str) -> tuple[int | None, int]:
        with self.pipeline.readers() as session:
            row = session.execute(
                sa.select(MailboxFolder.uidvalidity, MailboxFolder.last_uid).where(
                    MailboxFolder.mailbox_id == self.config.id, MailboxFolder.name == folder
                )
            ).first()
        return (row.uidvalidity, row.last_uid) if row else (None, 0)

    def _advance(
        self,
        conn: sa.Connection,
        folder: str,
        uidvalidity: int,
        last_uid: int,
        *,
        pending: int,
        before: SyncStats,
    ) -> None:
        """The folder's position and the mailbox's counters, in the outcomes' transaction;
        `pending`: the folder's backlog, to which the other folders' are added."""
        now = datetime.now(UTC)
        position = {"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": now}
        changed = conn.execute(
            sa.update(MailboxFolder)
            .where(MailboxFolder.mailbox_id == self.config.id, MailboxFolder.name == folder)
            .values(position)
        )
        if not changed.rowcount:
            conn.execute(
                sa.insert(MailboxFolder).values(mailbox_id=self.config.id, name=folder, **position)
            )
        conn.execute(
            sa.update(Mailbox)
            .where(Mailbox.id == self.config.id)
            .values(
                pending=max(pending, 0) + self._backlog_elsewhere(folder),
                synced=Mailbox.synced + self.stats.messages - before.messages,
                bodies_fetched=Mailbox.bodies_fetched
                + self.stats.bodies_fetched
                - before.bodies_fetched,
                bodies_skipped=Mailbox.bodies_skipped
                + self.stats.bodies_skipped
                - before.bodies_skipped,
            )
        )

    def _set_pending(self, folder: str, count: int) -> None:
        """The folder's backlog as just counted; the mailbox's is every folder's (one that
        failed keeps what it had left, not what the next folder has)."""
        self.backlog[folder] = count
        pending = count + self._backlog_elsewhere(folder)
        with self.pipeline.connections().begin() as conn:
            conn.execute(
                sa.update(Mailbox).where(Mailbox.id == self.config.id).values(pending=pending)
            )

    def _backlog_elsewhere(self, folder: str) -> int:
        return sum(count for name, count in self.backlog.items() if name != folder)

    def _mark_synced(self) -> None:
        with self.pipeline.connections().begin() as conn:
            conn.execute(
                sa.update(Mailbox)
                .where(Mailbox.id == self.config.id)
                .values(last_sync_at=datetime.now(UTC), last_error=None, last_error_at=None)
            )


def _kind(error: Exception) -> str:
    """A folder's failure in the words of the server or of this module: no message's."""
    return f"{type(error).__name__}: {str(error)[:200]}"


def _search_date(day: date) -> str:
    """A SEARCH date as RFC 3501 writes it, `01-Jan-0001`: its year in four digits, which
    imapclient leaves out for a year before 1000 (servers refuse `01-Jan-1`)."""
    return f"{day.day:02d}-{_MONTHS[day.month - 1]}-{day.year:04d}"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _present(
    fetched: dict[int, dict[bytes, Any]], uids: Sequence[int]
) -> Iterator[tuple[int, dict[bytes, Any]]]:
    """The fetched messages in UID order; one expunged since the search is simply absent."""
    for uid in uids:
        data = fetched.get(uid)
        if data is not None:
            yield uid, data


def _section(data: dict[bytes, Any]) -> tuple[bytes, int]:
    """A message's header section and the size its server reports."""
    header = bytes(data.get(b"BODY[HEADER]") or b"")[:HEADER_CAP]
    return header, int(data.get(b"RFC822.SIZE") or len(header))


def _by_size(items: list[_Waiting], limit: int) -> Iterator[list[_Waiting]]:
    chunk: list[_Waiting] = []
    total = 0
    for item in items:
        if chunk and total + item.size > limit:
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += item.size
    if chunk:
        yield chunk
