"""Serve: the mailboxes Mailroom reads; one sync task each, none able to stop the others."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, date, datetime
from functools import partial

import sqlalchemy as sa
from cryptography.fernet import InvalidToken
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy.orm import Session, sessionmaker

from app.jobs import exclusively, to_thread_to_the_end
from app.mailbox_schemas import FolderOut, MailboxOut
from app.metrics import Metrics
from app.models import Employee, Mailbox, MailboxFolder
from app.runtime import Runtime, follow_policy_in
from app.sealing import UnboundError, seal, sealed_for, unseal
from capture.imap import FolderSync, MailboxConfig, MailboxError, close, connect
from capture.pipeline import Pipeline

log = logging.getLogger("mailroom.mailboxes")

TLS_MODES = ("tls", "starttls", "none")
IDLE_SECONDS = 300.0  # re-read every folder at least this often, IDLE or not
POLL_SECONDS = 60.0  # servers without IDLE
RELOAD_SECONDS = 30.0  # new or removed mailboxes are noticed this fast
MAX_BACKOFF = 300.0
LEASE_RETRY_SECONDS = 10.0  # how soon another process's mailbox is tried again
SENT_NAMES = frozenset({"sent", "sent items", "sent messages", "sent mail"})


class MailboxGoneError(LookupError):
    """The mailbox is no longer in the table (removed): its sync ends, quietly. Any other
    error, a KeyError from a server's odd answer included, is recorded and retried."""


def named_sent(folder: str) -> bool:
    """Whether a folder's name says it holds sent mail: a usual English name, whole or as
    the last level after "/" (after "." in a name without "/": a server whose levels are
    split by dots). Whatever its name, a folder the server flags `\\Sent` counts too."""
    last = folder.rsplit("/", 1)[-1] if "/" in folder else folder.rsplit(".", 1)[-1]
    return last.casefold() in SENT_NAMES


def add_mailbox(
    session: Session,
    secret: bytes,
    *,
    employee: str | None,
    host: str,
    port: int,
    username: str,
    password: str,
    folders: list[str],
    tls: str,
    since: date | None = None,
    plain_remote: bool = False,
) -> Mailbox:
    """A mailbox to sync: an employee's, or (employee None) a journal of all company mail.
    Without TLS the password crosses the network in clear: refused for a host that is not
    loopback unless `plain_remote` says the operator means it."""
    if tls not in TLS_MODES:
        raise ValueError(f"tls must be one of {', '.join(TLS_MODES)}")
    if tls == "none" and not plain_remote and not _loopback(host):
        raise ValueError("without TLS only a loopback host: the password would cross in clear")
    _check_login(username, password)
    employee_id = None
    if employee is not None:
        employee_id = session.scalar(sa.select(Employee.id).where(Employee.email == employee))
        if employee_id is None:
            raise ValueError(f"no employee {employee}")
    if not folders or any(not f or any(c in f for c in '\r\n"\\') for f in folders):
        raise ValueError("folders are non-empty names without quotes, backslashes or newlines")
    mailbox = Mailbox(
        employee_id=employee_id,
        host=host,
        port=port,
        username=username,
        password_sealed="",
        folders=folders,
        sent_folders=[f for f in folders if named_sent(f)],
        tls=tls,
        journal=employee is None,
        since=datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None,
    )
    mailbox.password_sealed = seal(secret, password, bound_to=sealed_for(mailbox))
    session.add(mailbox)
    session.flush()
    return mailbox


def _check_login(username: str, password: str) -> None:
    if not (username.isascii() and password.isascii()):
        # imaplib's LOGIN sends ASCII alone: such a password could never log in.
        raise ValueError("the user name and password must be ASCII (IMAP LOGIN takes no other)")
    if any(c in "\r\n\0" for c in username + password):
        # A quoted string holds none: the rest would reach the server as a command of its own.
        raise ValueError("the user name and password hold no line break (nor NUL) in IMAP LOGIN")
    if not password:
        raise ValueError("the password is empty")


def set_password(session: Session, secret: bytes, mailbox_id: int, password: str) -> bool:
    """A mailbox's new password (the employee changed it, or the server refused the old
    one), sealed for the mailbox as it stands, as `add_mailbox` seals one. Where each
    folder's sync stands is kept; the next login uses it (a paused mailbox's, once it is
    resumed). Whether the mailbox was found.

    Only for a mailbox whose stored password still unseals: that proves its server, user
    and employee are the ones Mailroom sealed it for. One changed in the table by whoever
    lacks the secret key would otherwise be handed the new password (ValueError: add the
    mailbox again, naming its server and user)."""
    mailbox = session.get(Mailbox, mailbox_id)
    if mailbox is None:
        return False
    _check_login(mailbox.username, password)
    try:
        stored_password(secret, mailbox)
    except MailboxError as error:
        raise ValueError(str(error)) from None
    mailbox.password_sealed = seal(secret, password, bound_to=sealed_for(mailbox))
    session.flush()
    return True


def remove_mailbox(session: Session, mailbox_id: int) -> bool:
    """Forget a mailbox: its password and where each folder's sync stands. `mailroom serve`
    stops its sync within half a minute, after the batch in hand. What it filed stays (the
    employee's mail, under the policy); whether it was found."""
    removed = session.execute(sa.delete(Mailbox).where(Mailbox.id == mailbox_id))
    return bool(removed.rowcount)  # type: ignore[attr-defined]


def set_enabled(session: Session, mailbox_id: int, enabled: bool) -> bool:
    """Sync a mailbox or not; a disabled one keeps its password and folder positions, and
    `mailroom serve` ends its session within half a minute. Whether it was found."""
    changed = session.execute(
        sa.update(Mailbox).where(Mailbox.id == mailbox_id).values(enabled=enabled)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


def _loopback(host: str) -> bool:
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def describe_mailboxes(session: Session, *, only: int | None = None) -> list[MailboxOut]:
    """Every mailbox (or one) as the API and the admin page show it: its sync state, never
    its password."""
    now = datetime.now(UTC)
    folders: dict[int, list[FolderOut]] = {}
    for folder in session.scalars(sa.select(MailboxFolder).order_by(MailboxFolder.id)):
        folders.setdefault(folder.mailbox_id, []).append(FolderOut.model_validate(folder))
    query = (
        sa.select(Mailbox, Employee.email)
        .outerjoin(Employee, Employee.id == Mailbox.employee_id)
        .order_by(Mailbox.id)
    )
    rows = session.execute(query if only is None else query.where(Mailbox.id == only))
    return [
        MailboxOut(
            id=m.id,
            employee=email,
            host=m.host,
            port=m.port,
            username=m.username,
            tls=m.tls,
            journal=m.journal,
            folders=list(m.folders),
            enabled=m.enabled,
            last_sync_at=m.last_sync_at,
            lag_seconds=(now - m.last_sync_at).total_seconds() if m.last_sync_at else None,
            pending=m.pending,
            synced=m.synced,
            bodies_fetched=m.bodies_fetched,
            bodies_skipped=m.bodies_skipped,
            last_error=m.last_error,
            last_error_at=m.last_error_at,
            folder_state=folders.get(m.id, []),
        )
        for m, email in rows
    ]


def mailbox_lags(sessions: sessionmaker[Session]) -> list[tuple[int, float]]:
    """Each enabled mailbox's id and seconds since its last complete sync (since it was
    added, before its first): `mailroom_imap_lag_seconds`."""
    now = datetime.now(UTC)
    with sessions() as session:
        rows = session.execute(
            sa.select(Mailbox.id, Mailbox.last_sync_at, Mailbox.created_at)
            .where(Mailbox.enabled)
            .order_by(Mailbox.id)
        )
        return [(id_, (now - (synced or added)).total_seconds()) for id_, synced, added in rows]


def load_config(session: Session, secret: bytes, mailbox_id: int) -> MailboxConfig:
    row = session.get(Mailbox, mailbox_id)
    if row is None:
        raise MailboxGoneError(f"no mailbox {mailbox_id}")
    employee = session.get(Employee, row.employee_id) if row.employee_id else None
    password = stored_password(secret, row)
    return MailboxConfig(
        id=row.id,
        host=row.host,
        port=row.port,
        username=row.username,
        password=password,
        folders=tuple(row.folders),
        sent_folders=frozenset(row.sent_folders),
        tls=row.tls,
        employee=employee.email if employee else "",
        journal=row.journal,
        since=row.since.date() if row.since else None,
    )


def stored_password(secret: bytes, row: Mailbox) -> str:
    """A mailbox's password, unsealed for the mailbox as the table has it now; MailboxError
    saying why not."""
    try:
        return unseal(secret, row.password_sealed, bound_to=sealed_for(row))
    except UnboundError:
        raise MailboxError(
            f"mailbox {row.id}: its stored password was sealed by a release before "
            "2026-11-24: run `mailroom mailboxes reseal` once"
        ) from None
    except InvalidToken:
        raise MailboxError(
            f"mailbox {row.id}: its stored password does not unseal: the secret key changed, "
            "or its employee, server, port, user or TLS mode was changed in the database "
            "(Mailroom never changes them); add the mailbox again"
        ) from None


def mailbox_lease(db: sa.Engine, mailbox_id: int) -> AbstractContextManager[bool]:
    """Whether this process may sync the mailbox now, held until the block ends: on
    PostgreSQL one process at a time syncs a mailbox (`mailroom serve`'s worker, or
    `mailroom mailboxes sync`); SQLite serves one process."""
    return exclusively(db, f"mailbox-{mailbox_id}")


def describe_error(error: BaseException) -> str:
    """The kind of error, with the words of the server or the network where those are what
    failed (or this sync's own, `MailboxError`, which names folders and sizes, never mail):
    they name no message, since nothing from a message goes into a command. Any
    other error (the database refusing to file a message, a bug) is named by its kind
    alone: its text may quote the mail being filed, and admins never see mail."""
    if isinstance(error, (OSError, IMAPClientError, MailboxError)):
        return f"{type(error).__name__}: {str(error)[:300]}"
    return type(error).__name__


def paused_for_login(mailbox_id: int) -> str:
    """What a mailbox paused for a refused login adds to its last error: why, and the
    command that gives it the new password and resumes it."""
    return (
        "; paused: the server refused the login, and retries could lock the account. Give it "
        f"the new password (`mailroom mailboxes password {mailbox_id} --password-env VAR "
        "--resume`), or resume it once the account is fixed"
    )


def login_refused(error: BaseException) -> bool:
    """Whether the server refused the login itself: any refusal but one it says is
    temporary (RFC 5530's [UNAVAILABLE]). Exchange says no more than "LOGIN failed"."""
    return isinstance(error, LoginError) and "[UNAVAILABLE]" not in str(error).upper()


def record_error(sessions: sessionmaker[Session], mailbox_id: int, error: BaseException) -> str:
    """What went wrong, as the API shows it (`describe_error`); returned too. A refused login
    also pauses the mailbox, and says so: each retry is one more failed login on the
    employee's account, where a lockout policy counts them."""
    text = describe_error(error)
    values: dict[str, object] = {"last_error": text, "last_error_at": datetime.now(UTC)}
    if login_refused(error):
        paused = paused_for_login(mailbox_id)
        values.update(last_error=text[: 500 - len(paused)] + paused, enabled=False)
    with sessions() as session, session.begin():
        session.execute(sa.update(Mailbox).where(Mailbox.id == mailbox_id).values(**values))
    return str(values["last_error"])


def folder_sync(
    client: IMAPClient,
    pipeline: Pipeline,
    config: MailboxConfig,
    *,
    max_bytes: int,
    stop: threading.Event,
    progress: Callable[[int, int], None] | None = None,
    metrics: Metrics | None = None,
) -> FolderSync:
    """A mailbox's sync whose every batch is decided under the version in force as it
    begins, as the listener's are."""
    return FolderSync(
        client,
        pipeline,
        config,
        max_bytes=max_bytes,
        stop=stop,
        progress=progress,
        metrics=metrics,
        on_begin=partial(follow_policy_in, pipeline=pipeline),
    )


def sync_once(
    pipeline: Pipeline,
    config: MailboxConfig,
    *,
    max_bytes: int,
    stop: threading.Event,
    progress: Callable[[int, int], None] | None = None,
) -> FolderSync:
    """Connect, bring every folder up to date, log out. For the tests."""
    client = connect(config, max_bytes=max_bytes)
    try:
        sync = folder_sync(
            client, pipeline, config, max_bytes=max_bytes, stop=stop, progress=progress
        )
        sync.sync_all()
        return sync
    finally:
        close(client)


def follow(
    pipeline: Pipeline,
    config: MailboxConfig,
    *,
    max_bytes: int,
    stop: threading.Event,
    synced: threading.Event | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Until stopped: sync every folder, then wait for news in the first one (IDLE where the
    server has it, else a pause), and again. Raises on any failure; the caller backs off.
    `synced` is set after each sync of every folder: the caller's backoff starts afresh.
    `metrics` count each committed outcome."""
    client = connect(config, max_bytes=max_bytes)
    try:
        sync = folder_sync(
            client, pipeline, config, max_bytes=max_bytes, stop=stop, metrics=metrics
        )
        idle = b"IDLE" in client.capabilities()
        while not stop.is_set():
            sync.sync_all()
            if synced is not None:
                synced.set()
            if idle:
                _idle(sync, config.folders[0], stop)
            else:
                stop.wait(POLL_SECONDS)
    finally:
        close(client)


def _idle(sync: FolderSync, folder: str, stop: threading.Event) -> None:
    """Wait in IDLE until the folder changes; at once if something arrived since its sync."""
    client = sync.client
    client.select_folder(folder, readonly=True)
    if sync.has_new(folder):
        return
    client.idle()
    try:
        waited = 0.0
        while not stop.is_set() and waited < IDLE_SECONDS:
            if client.idle_check(timeout=1.0):
                return  # something changed: sync now
            waited += 1.0
    finally:
        client.idle_done()


class MailboxRunner:
    """One task per enabled mailbox inside `mailroom serve`; imapclient in a thread of its
    own per mailbox, so that a slow server holds up nothing else."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        pipeline: Pipeline,
        *,
        secret: bytes,
        max_bytes: int,
        db: sa.Engine | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db  # where leases are taken; None: this process is the only one
        self.sessions = sessions
        self.pipeline = pipeline
        self.secret = secret
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.stops: dict[int, threading.Event] = {}  # each task's: set, it ends after its batch

    async def run(self) -> None:
        """Start mailbox tasks, and stop those of mailboxes paused or removed, until
        cancelled; then let each finish its batch. A look that fails (the database away for
        a moment) is tried again RELOAD_SECONDS later, the running syncs going on meanwhile."""
        try:
            while True:
                try:
                    enabled = await to_thread_to_the_end(self._enabled)
                except Exception as error:  # its type only: a database error quotes values
                    log.warning("mailboxes not reloaded (%s)", type(error).__name__)
                else:
                    self._reload(enabled)
                await asyncio.sleep(RELOAD_SECONDS)
        except asyncio.CancelledError:
            for stop in self.stops.values():
                stop.set()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            raise

    def _reload(self, enabled: set[int]) -> None:
        """A task for each enabled mailbox; the others' tasks told to stop."""
        for mailbox_id, running in list(self.tasks.items()):
            if mailbox_id in enabled:
                continue
            self.stops[mailbox_id].set()  # it ends after the batch in hand
            if running.done():
                del self.tasks[mailbox_id], self.stops[mailbox_id]
        for mailbox_id in enabled:
            task = self.tasks.get(mailbox_id)
            if task is None or task.done():
                self.stops[mailbox_id] = threading.Event()
                self.tasks[mailbox_id] = asyncio.create_task(self._mailbox(mailbox_id))

    def _enabled(self) -> set[int]:
        with self.pipeline.readers() as session:
            return set(session.scalars(sa.select(Mailbox.id).where(Mailbox.enabled)))

    async def _mailbox(self, mailbox_id: int) -> None:
        backoff = 1.0
        loop = asyncio.get_running_loop()
        stop = self.stops[mailbox_id]
        synced = threading.Event()  # the mailbox synced since its last failure
        with ThreadPoolExecutor(1, thread_name_prefix=f"imap-{mailbox_id}") as thread:
            while not stop.is_set():
                try:
                    await loop.run_in_executor(thread, self._follow, mailbox_id, stop, synced)
                    backoff = 1.0
                except MailboxGoneError:
                    return
                except Exception as error:
                    if synced.is_set():  # a failure after a good spell backs off from 1 s
                        backoff = 1.0
                        synced.clear()
                    log.warning("mailbox %d: %s", mailbox_id, type(error).__name__)
                    await loop.run_in_executor(
                        thread, record_error, self.sessions, mailbox_id, error
                    )
                    if login_refused(error):  # paused: resumed, it gets a task again
                        log.warning("mailbox %d paused: the server refused its login", mailbox_id)
                        return
                    await loop.run_in_executor(thread, stop.wait, backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)

    def _follow(self, mailbox_id: int, stop: threading.Event, synced: threading.Event) -> None:
        """Sync the mailbox while holding its lease: on PostgreSQL, one process at a time
        syncs a mailbox; the others look again every LEASE_RETRY_SECONDS, so a dead
        worker's mailboxes move on that soon after its connection closes."""
        lease = mailbox_lease(self.db, mailbox_id) if self.db else nullcontext(True)
        with lease as mine:
            if not mine:
                stop.wait(LEASE_RETRY_SECONDS)
                return
            with self.pipeline.readers() as session:
                config = load_config(session, self.secret, mailbox_id)
            follow(
                self.pipeline,
                config,
                max_bytes=self.max_bytes,
                stop=stop,
                synced=synced,
                metrics=self.metrics,
            )


def mailbox_runner(runtime: Runtime) -> MailboxRunner:
    settings = runtime.settings
    runtime.metrics.watch_mailboxes(partial(mailbox_lags, runtime.read_sessions))
    return MailboxRunner(
        runtime.sessions,
        runtime.pipeline,
        secret=settings.secret(),
        max_bytes=settings.max_message_bytes,
        db=runtime.db,
        metrics=runtime.metrics,
    )
