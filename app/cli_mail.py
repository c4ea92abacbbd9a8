"""Serve: the `mailroom mailboxes` and `mailroom import` commands."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from app.db import transaction
from app.models import MAX_ID, Employee, Mailbox
from app.settings import Settings

if TYPE_CHECKING:  # the pipeline's modules are imported by the commands that run it
    from sqlalchemy.orm import Session

    from app.runtime import Runtime
    from capture.archive import Archive, ArchiveKind, ImportStats
    from capture.imap import MailboxConfig, SyncStats

mailboxes_cli = typer.Typer(help="IMAP mailboxes Mailroom reads.", no_args_is_help=True)
import_cli = typer.Typer(help="Import history from mail archives.", no_args_is_help=True)

err = Console(stderr=True)


def _runtime() -> Runtime:
    return runtime_or_exit(Settings())


def runtime_or_exit(settings: Settings, *, publish: bool = True) -> Runtime:
    """The runtime of a command that applies the policy (see build_runtime for `publish`).
    An invalid policy file is named with each of its problems (which quote the policy,
    never mail), and the command ends."""
    from app.runtime import VersionInForceError, build_runtime
    from policies.engine import PolicyError

    try:
        return build_runtime(settings, publish=publish)
    except VersionInForceError as error:
        for problem in error.problems:
            typer.echo(problem, err=True)
        raise _fail(
            "the policy in force is invalid; put another in force: PUT /api/v1/policy on a "
            "process still running, or start with a POLICY file never published before"
        ) from None
    except PolicyError as error:
        for problem in error.problems:
            typer.echo(f"{settings.policy}: {problem}", err=True)
        raise _fail("the policy is invalid; Mailroom does not start without a valid one") from None


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
        # A date or time without a zone is UTC's; one with a zone is that moment.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # no date, or one out of range in UTC
        raise _fail(f"--since wants a date like 2025-01-31, not {value!r}") from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


@mailboxes_cli.command("add")
def mailboxes_add(
    host: Annotated[str, typer.Option(help="The IMAP server.")],
    user: Annotated[str, typer.Option(help="The login name.")],
    password_env: Annotated[
        str, typer.Option(help="The environment variable holding the password.")
    ],
    employee: Annotated[
        str | None, typer.Option(help="Whose mailbox; omit with --journal.")
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 993,
    folders: Annotated[str, typer.Option(help="Comma list; a folder named Sent is outbound.")] = (
        "INBOX,Sent"
    ),
    tls: Annotated[bool, typer.Option("--tls", help="Implicit TLS (port 993).")] = False,
    starttls: Annotated[bool, typer.Option("--starttls", help="STARTTLS (port 143).")] = False,
    plain: Annotated[
        bool, typer.Option("--plain", help="No TLS at all: loopback test servers only.")
    ] = False,
    plain_remote: Annotated[
        bool,
        typer.Option(
            "--plain-remote",
            help="With --plain, allow a host that is not loopback: the password goes in clear.",
        ),
    ] = False,
    journal: Annotated[
        bool, typer.Option(help="A journal mailbox: copies of all company mail.")
    ] = False,
    since: Annotated[str | None, typer.Option(help="Backfill from this date on.")] = None,
) -> None:
    """Add a mailbox to sync. The password is read from an environment variable (never from
    the command line, where other users could see it) and stored encrypted."""
    from app.mailboxes import add_mailbox

    if sum((tls, starttls, plain)) > 1:
        raise _fail("choose one of --tls, --starttls and --plain")
    if journal == (employee is not None):
        raise _fail("give --employee, or --journal for a journal mailbox")
    password = _password(password_env)
    mode = "starttls" if starttls else "none" if plain else "tls"
    horizon = _since(since)
    runtime = _runtime()
    try:
        with transaction(runtime.sessions) as session:
            mailbox = add_mailbox(
                session,
                runtime.settings.secret(),
                employee=employee.lower() if employee else None,
                host=host,
                port=port,
                username=user,
                password=password,
                folders=[f.strip() for f in folders.split(",") if f.strip()],
                tls=mode,
                since=horizon.date() if horizon else None,
                plain_remote=plain_remote,
            )
            typer.echo(f"mailbox {mailbox.id} added")
    except ValueError as error:
        raise _fail(str(error)) from None
    finally:
        runtime.close()


@mailboxes_cli.command("list")
def mailboxes_list() -> None:
    """Every mailbox with its last sync, backlog and last error (never its password)."""
    runtime = _runtime()
    table = Table(
        "id", "employee", "server", "folders", "state", "last sync", "pending", "last error"
    )
    with runtime.sessions() as session:
        rows = session.execute(
            sa.select(Mailbox, Employee.email).outerjoin(
                Employee, Employee.id == Mailbox.employee_id
            )
        )
        for mailbox, email in rows:
            cells = (
                str(mailbox.id),
                email or "(journal)",
                f"{mailbox.username}@{mailbox.host}:{mailbox.port}",
                ",".join(mailbox.folders),
                "syncing" if mailbox.enabled else "paused",
                mailbox.last_sync_at.isoformat(timespec="seconds") if mailbox.last_sync_at else "",
                str(mailbox.pending),
                mailbox.last_error or "",
            )
            # As written: a name or a server's words in brackets are no markup for rich.
            table.add_row(*map(Text, cells))
    runtime.close()
    Console().print(table)


@mailboxes_cli.command("remove")
def mailboxes_remove(
    mailbox_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The mailbox's id.")],
) -> None:
    """Forget a mailbox (its password, where each folder's sync stands); `mailroom serve`
    stops syncing it within half a minute. What it filed stays."""
    from app.mailboxes import remove_mailbox

    _change(mailbox_id, remove_mailbox, "removed; the mail it filed stays")


@mailboxes_cli.command("pause")
def mailboxes_pause(
    mailbox_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The mailbox's id.")],
) -> None:
    """Stop syncing a mailbox for now; it keeps its password and where each folder stands."""
    from app.mailboxes import set_enabled

    _change(mailbox_id, partial(set_enabled, enabled=False), "paused")


@mailboxes_cli.command("resume")
def mailboxes_resume(
    mailbox_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The mailbox's id.")],
) -> None:
    """Sync a paused mailbox again, from where each folder stood."""
    from app.mailboxes import set_enabled

    _change(mailbox_id, partial(set_enabled, enabled=True), "resumed")


@mailboxes_cli.command("password")
def mailboxes_password(
    mailbox_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The mailbox's id.")],
    password_env: Annotated[
        str, typer.Option(help="The environment variable holding the new password.")
    ],
    resume: Annotated[
        bool, typer.Option("--resume", help="Sync it again, if it is paused.")
    ] = False,
) -> None:
    """Give a mailbox its new password (the employee changed it, or the server refused the
    old one: the mailbox was paused). Read from an environment variable and stored
    encrypted, as with `add`; where each folder stands is kept."""
    from app.mailboxes import set_enabled, set_password

    password = _password(password_env)
    runtime = _runtime()
    try:
        with runtime.sessions() as session, session.begin():
            if not set_password(session, runtime.settings.secret(), mailbox_id, password):
                raise _fail(f"no mailbox {mailbox_id}")
            if resume:
                set_enabled(session, mailbox_id, True)
            enabled = session.get_one(Mailbox, mailbox_id).enabled
    except ValueError as error:
        raise _fail(str(error)) from None
    finally:
        runtime.close()
    if enabled:
        typer.echo(f"mailbox {mailbox_id}: password changed; it syncs from where it stood")
    else:
        typer.echo(
            f"mailbox {mailbox_id}: password changed; it is paused "
            f"(`mailroom mailboxes resume {mailbox_id}` syncs it from where it stood)"
        )


def _password(variable: str) -> str:
    """A password from an environment variable: never from the command line, where other
    users could see it."""
    password = os.environ.get(variable)
    if not password:
        raise _fail(f"the environment variable {variable} is not set")
    return password


def _change(mailbox_id: int, change: Callable[[Session, int], bool], done: str) -> None:
    """Change one mailbox in a transaction of its own, and say `done` (or that there is no
    such mailbox: `change` says whether it found it)."""
    runtime = _runtime()
    try:
        with runtime.sessions() as session, session.begin():
            found = change(session, mailbox_id)
    finally:
        runtime.close()
    if not found:
        raise _fail(f"no mailbox {mailbox_id}")
    typer.echo(f"mailbox {mailbox_id} {done}")


@mailboxes_cli.command("reseal")
def mailboxes_reseal() -> None:
    """Once after upgrading from a release before 2026-11-24: seal each mailbox password
    again, for its own mailbox (employee, server, port, user, TLS mode), so that a password
    moved in the database to another server or employee no longer unseals."""
    from app.sealing import seal_unbound_passwords

    runtime = _runtime()
    try:
        with runtime.sessions() as session, session.begin():
            resealed = seal_unbound_passwords(session, runtime.settings.secret())
    finally:
        runtime.close()
    typer.echo(f"{resealed} mailbox passwords sealed again, each for its own mailbox")


@mailboxes_cli.command("sync")
def mailboxes_sync(
    mailbox_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The mailbox's id.")],
) -> None:
    """Bring one mailbox up to date now (a backfill), with a progress bar; `serve` keeps
    every mailbox up to date by itself."""
    from imapclient.exceptions import IMAPClientError

    from app.mailboxes import MailboxGoneError, load_config, mailbox_lease, record_error
    from capture.imap import MailboxError

    runtime = _runtime()
    try:
        with mailbox_lease(runtime.db, mailbox_id) as mine:
            if not mine:
                raise _fail(
                    f"mailbox {mailbox_id}: another process is syncing it (mailroom serve); "
                    "pause it there to sync it here"
                )
            with runtime.sessions() as session:
                config = load_config(session, runtime.settings.secret(), mailbox_id)
            stats = _sync(runtime, config)
    except MailboxGoneError as error:
        raise _fail(str(error)) from None
    except (OSError, IMAPClientError, MailboxError) as error:
        # The kind of error and the server's words (or this sync's own), as `mailboxes
        # list` shows them: they name no message, since nothing from a message goes into a
        # command. A refused login pauses the mailbox, and this says so.
        said = record_error(runtime.sessions, mailbox_id, error)
        raise _fail(f"mailbox {mailbox_id}: {said}") from None
    finally:
        runtime.close()
    typer.echo(
        f"{stats.messages} messages: {_outcomes(stats.outcomes)}; "
        f"{stats.bodies_skipped} decided on headers alone, {stats.bodies_fetched} bodies read"
    )


def _sync(runtime: Runtime, config: MailboxConfig) -> SyncStats:
    from app.mailboxes import folder_sync
    from capture.imap import close, connect

    client = connect(config, max_bytes=runtime.settings.max_message_bytes)
    try:
        with _progress() as progress:
            task = progress.add_task("syncing", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            sync = folder_sync(
                client,
                runtime.pipeline,
                config,
                max_bytes=runtime.settings.max_message_bytes,
                stop=threading.Event(),
                progress=advance,
            )
            return sync.sync_all()
    finally:
        close(client)


def _outcomes(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) or "nothing new"


def _import(kind: ArchiveKind, path: Path, employee: str, since: str | None, sent: bool) -> None:
    from app.employees import find_employee
    from app.runtime import follow_policy_in
    from capture.archive import import_messages, open_archive

    horizon = _since(since)
    try:
        archive = open_archive(path, kind)
    except (OSError, ValueError) as error:
        raise _fail(str(error)) from None
    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            found = find_employee(session, employee)
            if found is None:
                raise _fail(f"no employee {employee}")
        with _progress() as progress:
            task = progress.add_task(f"importing {escape(path.name)}", total=archive.total)
            stats = import_messages(
                runtime.pipeline,
                archive.messages,
                employee=found.email,
                max_bytes=runtime.settings.max_message_bytes,
                sent=sent,
                since=horizon,
                progress=lambda n: progress.advance(task, n),
                on_begin=partial(follow_policy_in, pipeline=runtime.pipeline),
            )
    finally:
        runtime.close()
    over_cap = f" ({stats.over_cap} over the size cap, on their headers)" if stats.over_cap else ""
    typer.echo(
        f"{stats.read} read: {stats.imported} imported ({_outcomes(stats.outcomes)}){over_cap}, "
        f"{stats.already_done} already imported, {stats.before_horizon} before --since"
    )
    problems = _left_out(archive, stats)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)


def _left_out(archive: Archive, stats: ImportStats) -> list[str]:
    """What the import left out, each a line naming no message (nothing of the mail)."""
    problems = []
    if archive.not_files:
        entries = "1 entry" if archive.not_files == 1 else f"{archive.not_files} entries"
        problems.append(
            f"{entries} of the Maildir left out unread: not a regular file"
            " (a symbolic link, a FIFO, a device or a folder)"
        )
    if stats.failed:  # each logged by its error's type
        problems.append(f"{stats.failed} could not be filed and were left out; a rerun tries again")
    return problems


EmployeeOption = Annotated[str, typer.Option(help="The employee whose mail this is.")]
SinceOption = Annotated[str | None, typer.Option(help="Only mail dated on or after this day.")]
SentOption = Annotated[bool, typer.Option("--sent", help="It holds mail the employee sent.")]


@import_cli.command("mbox")
def import_mbox(
    path: Path, employee: EmployeeOption, since: SinceOption = None, sent: SentOption = False
) -> None:
    """Import an mbox file; a rerun skips what is already imported."""
    from capture.archive import ArchiveKind

    _import(ArchiveKind.MBOX, path, employee, since, sent)


@import_cli.command("maildir")
def import_maildir(
    path: Path, employee: EmployeeOption, since: SinceOption = None, sent: SentOption = False
) -> None:
    """Import a Maildir folder (with cur/ and new/); a rerun skips what is already imported."""
    from capture.archive import ArchiveKind

    _import(ArchiveKind.MAILDIR, path, employee, since, sent)
