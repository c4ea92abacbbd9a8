"""Serve: the `mailroom` command line.

Commands import what they need when they run: the server, the API and the mail pipeline
take a second and a half to import, which an `employees add` or `tokens create` should not
pay. Only what option types need is imported here.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import sqlalchemy as sa
import typer
from pydantic import ValidationError

from app.cli_mail import import_cli, mailboxes_cli, runtime_or_exit
from app.db import connected_engine, migrate, session_factory, transaction
from app.models import MAX_ID
from app.schemas import without_control_characters
from app.security import Role
from app.settings import Settings, StartError, invalid_settings
from app.web.login_cli import login_link
from policies.model import Channel

if TYPE_CHECKING:
    from app import ledger
    from app.server import Service
    from capture.pipeline import Pipeline
    from capture.spamd import Spamd
    from policies.engine import Engine

cli = typer.Typer(
    help="Mailroom: business mail into the CRM, personal mail never kept.",
    no_args_is_help=True,
    add_completion=False,
    # Typer's own tracebacks print every frame's variables: the mail being read. `main`
    # reports a fault by where it happened instead.
    pretty_exceptions_enable=False,
)
employees_cli = typer.Typer(help="Manage employees.", no_args_is_help=True)
tokens_cli = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
policy_cli = typer.Typer(help="Check and publish the capture policy.", no_args_is_help=True)
ledger_cli = typer.Typer(help="The decision log.", no_args_is_help=True)
cli.add_typer(employees_cli, name="employees")
cli.add_typer(tokens_cli, name="tokens")
cli.add_typer(policy_cli, name="policy")
cli.add_typer(ledger_cli, name="ledger")
cli.add_typer(mailboxes_cli, name="mailboxes")
cli.add_typer(import_cli, name="import")
cli.command("login-link")(login_link)

DEMO_EMPLOYEE = "alice@example.com"


def _sessions(settings: Settings, *, writer: bool = True) -> sa.orm.sessionmaker[sa.orm.Session]:
    """Sessions on the database; `writer=False` for a command that only reads, which then
    never takes SQLite's write lock (that would hold up the listener as long as it reads)."""
    settings.ensure_data_dir()
    url = settings.resolved_database_url
    if settings.auto_migrate:
        migrate(url)
    return session_factory(connected_engine(url), writer=writer)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _text(limit: int) -> Callable[[str], str]:
    """An option's check: text the API takes (at most `limit` characters, as its column
    holds, and no control characters), else a usage error rather than a fault on PostgreSQL."""

    def check(value: str) -> str:
        if len(value) > limit:
            raise typer.BadParameter(f"at most {limit} characters")
        try:
            return without_control_characters(value)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None

    return check


@cli.command()
def serve(
    demo: Annotated[
        bool, typer.Option(help="Add the demo employee and print how to try it.")
    ] = False,
    smtp: Annotated[bool, typer.Option("--smtp", help="Run the SMTP listener.")] = False,
    api: Annotated[bool, typer.Option("--api", help="Run the REST API and pages.")] = False,
    imap: Annotated[bool, typer.Option("--imap", help="Run the IMAP sync worker.")] = False,
) -> None:
    """Run this process's roles until SIGINT or SIGTERM: by default all of them (SMTP, API,
    IMAP sync); name roles to run only those (several processes can share one PostgreSQL)."""
    import asyncio

    from app.logs import LogFormat, configure
    from app.runtime import settle_heap
    from app.server import DEFAULT_ROLES, ProcessRole, Service

    settings = Settings()
    configure(LogFormat(settings.log_format), level=settings.log_level)
    chosen = {ProcessRole.SMTP: smtp, ProcessRole.API: api, ProcessRole.IMAP: imap}
    roles = frozenset(role for role, on in chosen.items() if on) or DEFAULT_ROLES
    runtime = runtime_or_exit(settings)
    token = _seed_demo(runtime.sessions) if demo else None
    settle_heap()

    service = Service(runtime, roles=roles)
    asyncio.run(service.run_until_signalled(on_started=lambda: _print_banner(service, token)))


def _print_banner(service: Service, token: str | None) -> None:
    from app.server import DEFAULT_ROLES, ProcessRole

    s = service.runtime.settings
    capture = s.capture_addresses[0] if s.capture_addresses else "(none configured)"
    lines = [
        "Mailroom is running.",
        f"  SMTP  {s.smtp_host}:{service.smtp_port}   capture address: {capture}",
        f"  API   http://{s.api_host}:{service.api_port}/docs",
        f"  What is kept, and why: http://{s.api_host}:{service.api_port}/policy",
    ]
    if service.roles != DEFAULT_ROLES:  # a role-limited process: say what this one does
        smtp = [lines[1]] if ProcessRole.SMTP in service.roles else []
        api = [lines[2]] if ProcessRole.API in service.roles else []
        http = f"  HTTP  http://{s.api_host}:{service.api_port}/readyz and /metrics"
        lines = [f"Mailroom is running: {', '.join(sorted(service.roles))}.", *smtp, *api, http]
    if token:
        send = (
            'python3 -c "import smtplib; from email.message import EmailMessage as M; '
            "m = M(); m['From'] = 'Alice <alice@example.com>'; "
            "m['To'] = 'Bob <bob@customer.example>'; "
            "m['Subject'] = 'Quote for 20 licences'; m.set_content('Hi Bob, here is the quote.'); "
            f"smtplib.SMTP('{s.smtp_host}', {service.smtp_port}).send_message(m, "
            f"to_addrs=['bob@customer.example', '{capture}'])\""
        )
        lines += [
            "",
            "Try it: Alice writes to a customer and BCCs the capture address:",
            f"  {send}",
            "Then see it filed against the contact bob@customer.example:",
            f"  curl -s -H 'Authorization: Bearer {token}' "
            f"http://{s.api_host}:{service.api_port}/api/v1/messages",
        ]
    typer.echo("\n".join(lines))


def _seed_demo(sessions: sa.orm.sessionmaker[sa.orm.Session]) -> str:
    from app.models import Employee
    from app.security import create_token

    with transaction(sessions) as session:
        employee = session.scalar(sa.select(Employee).where(Employee.email == DEMO_EMPLOYEE))
        if employee is None:
            employee = Employee(email=DEMO_EMPLOYEE, name="Alice Example")
            session.add(employee)
            session.flush()
        return create_token(session, role=Role.EMPLOYEE, employee_id=employee.id, label="demo")


@cli.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings = Settings()
    settings.ensure_data_dir()
    later = migrate(settings.resolved_database_url)
    if later is not None:
        typer.echo(f"database is at revision {later}, of a later release: left as it is")
        return
    typer.echo("database is up to date")


@employees_cli.command("add")
def employees_add(
    email: str,
    name: Annotated[str, typer.Option(help="Display name.", callback=_text(200))] = "",
    alias: Annotated[list[str] | None, typer.Option(help="Another address of theirs.")] = None,
) -> None:
    """Add an employee (and aliases) who may submit mail."""
    from app import employees

    try:
        with transaction(_sessions(Settings())) as session:
            employee = employees.add_employee(session, email, name=name, aliases=alias or [])
            employee_id, primary = employee.id, employee.email
    except (employees.InvalidAddressError, employees.AddressTakenError) as error:
        raise _fail(str(error)) from None
    except sa.exc.IntegrityError:  # added by someone else since it was checked
        raise _fail("an address is already an employee's") from None
    typer.echo(f"employee {employee_id}: {primary}")


@employees_cli.command("app-password")
def employees_app_password(
    email: str,
    label: Annotated[
        str, typer.Option(help="Which mail client it is for.", callback=_text(200))
    ] = "",
) -> None:
    """Create an SMTP AUTH app password for an employee and print it (alone): shown once."""
    from app.employees import find_employee
    from capture.submitters import new_app_password

    with transaction(_sessions(Settings())) as session:
        found = find_employee(session, email)
        if found is None:
            raise _fail(f"no employee {email}")
        password = new_app_password(session, found.id, label)
    typer.echo(password)


@employees_cli.command("app-passwords")
def employees_app_passwords(email: str) -> None:
    """List an employee's app passwords: id, when made, label, and when revoked."""
    from app.employees import find_employee
    from capture.submitters import app_passwords

    with _sessions(Settings())() as session:
        found = find_employee(session, email)
        if found is None:
            raise _fail(f"no employee {email}")
        for row in app_passwords(session, found.id):
            revoked = f"  revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else ""
            typer.echo(f"{row.id}  {row.created_at:%Y-%m-%d %H:%M}  {row.label}{revoked}")


@employees_cli.command("revoke-app-password")
def employees_revoke_app_password(
    password_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="Its id (app-passwords).")],
) -> None:
    """Revoke an app password at once (a lost laptop): SMTP AUTH with it fails from then on."""
    from capture.submitters import revoke_app_password

    with transaction(_sessions(Settings())) as session:
        if not revoke_app_password(session, password_id, datetime.now(UTC)):
            raise _fail(f"no app password {password_id}")
    typer.echo(f"app password {password_id} revoked")


@tokens_cli.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="What the token may do.")],
    employee: Annotated[
        str | None, typer.Option(help="The employee an employee token acts as.")
    ] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="Integration scope, e.g. contacts:read.")
    ] = None,
    label: Annotated[
        str, typer.Option(help="A note saying what the token is for.", callback=_text(200))
    ] = "",
) -> None:
    """Create an API token and print it (alone, on stdout): it is shown only this once."""
    from app.employees import find_employee
    from app.security import create_token

    with transaction(_sessions(Settings())) as session:
        employee_id = None
        if employee is not None:
            found = find_employee(session, employee)
            if found is None:
                raise _fail(f"no employee {employee}")
            employee_id = found.id
        try:
            token = create_token(
                session, role=role, employee_id=employee_id, scopes=tuple(scope or ()), label=label
            )
        except ValueError as error:
            raise _fail(str(error)) from None
    typer.echo(token)


@tokens_cli.command("revoke")
def tokens_revoke(
    token_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The token's id.")],
) -> None:
    """Revoke an API token at once; requests with it get 401 from then on."""
    from app.security import revoke_token

    with transaction(_sessions(Settings())) as session:
        if revoke_token(session, token_id, datetime.now(UTC)) is None:
            raise _fail(f"no token {token_id}")
    typer.echo(f"token {token_id} revoked")


@cli.command()
def explain(
    paths: Annotated[list[Path], typer.Argument(help="Raw .eml files.")],
    employee: Annotated[str | None, typer.Option(help="Submitter (default: each From).")] = None,
    channel: Annotated[Channel, typer.Option(help="The channel to assume.")] = Channel.BCC,
    sent: Annotated[
        bool, typer.Option("--sent", help="Read from a Sent folder (imap, import).")
    ] = False,
    relayed: Annotated[
        bool, typer.Option("--relayed", help="Delivered by a trusted relay (bcc, forward).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file.")] = False,
) -> None:
    """Say what the policy in force decides for each file, and why; nothing is stored (nor
    is the policy file published: the file applies only while none ever was)."""
    if sent and channel not in (Channel.IMAP, Channel.IMPORT):
        raise _fail("--sent is for mail read from a mailbox (--channel imap or import)")
    if relayed and channel in (Channel.IMAP, Channel.IMPORT):
        raise _fail("--relayed is for mail sent to the listener (--channel bcc or forward)")
    from capture.parse import normalize_address
    from capture.spamd import Spamd

    if employee is not None:  # as employees are stored: a Unicode domain in its xn-- form
        employee = normalize_address(employee.strip()) or employee

    settings = Settings()
    runtime = runtime_or_exit(settings, publish=False)
    # Mail sent to the listener is scored by spamd (where configured); a mailbox's is not.
    mailbox = channel in (Channel.IMAP, Channel.IMPORT)
    scorer = None if mailbox else Spamd.configured(settings.spamd_host, settings.spamd_port)
    unread = 0
    try:
        for path in paths:
            try:
                raw = path.read_bytes()
            except OSError as error:  # said, and the next file explained: exit status 1
                unread += 1
                typer.echo(_unreadable(path, error, as_json=as_json), err=not as_json)
                continue
            explained = _explain_one(
                runtime.pipeline,
                path,
                raw,
                employee,
                channel,
                sent=sent,
                relayed=relayed,
                scorer=scorer,
                as_json=as_json,
            )
            typer.echo(explained)
    finally:
        runtime.close()
    if unread:
        raise typer.Exit(1)


def _unreadable(path: Path, error: OSError, *, as_json: bool) -> str:
    reason = error.strerror or str(error)
    if as_json:
        return json.dumps({"path": str(path), "error": reason}, ensure_ascii=False)
    return f"error: {path}: {reason}"


def _explain_one(
    pipeline: Pipeline,
    path: Path,
    raw: bytes,
    employee: str | None,
    channel: Channel,
    *,
    sent: bool,
    relayed: bool,
    scorer: Spamd | None,
    as_json: bool,
) -> str:
    import asyncio

    from capture.pipeline import MAILBOX_CHANNELS, Envelope
    from capture.submitters import as_received

    vouched: frozenset[str] = frozenset()
    if channel not in MAILBOX_CHANNELS:  # as the listener receives it, and scores it
        raw, vouched = as_received(raw, pipeline.authserv_id, relayed=relayed)
    score = asyncio.run(scorer.score(raw)) if scorer else None
    envelope = Envelope(
        mail_from=employee or "",
        dkim_domains=vouched,
        sent_folder=sent,
        trusted_relay=relayed,
        spamd_score=score,
    )
    explanation = pipeline.explain(raw, envelope, channel)
    decision = explanation.decision
    result: dict[str, object] = {
        "path": str(path),
        "outcome": decision.outcome.value,
        "rules": list(decision.rules_hit),
        "deciding_rule": decision.deciding_rule,
        "policy": decision.policy_sha256,
        "contacts": list(explanation.contacts),
        "verdicts": [
            {"id": v.rule, "hit": v.hit, "reason": v.reason, "evidence": list(v.evidence)}
            for v in decision.verdicts
        ],
    }
    if as_json:
        return json.dumps(result, ensure_ascii=False)
    why = decision.deciding_rule or "no rule matched (policy default)"
    return f"{path}: {decision.outcome.value} ({why})"


def _load_or_exit(path: Path) -> Engine:
    """The compiled policy, or every problem with it printed and exit status 1."""
    from policies.engine import PolicyError
    from policies.loader import load_policy

    try:
        return load_policy(path)
    except PolicyError as error:
        for problem in error.problems:
            typer.echo(f"{path}: {problem}")
        raise typer.Exit(1) from None


@policy_cli.command("check")
def policy_check(path: Path) -> None:
    """Validate a policy file; print every problem and exit 1 if there is any."""
    engine = _load_or_exit(path)
    typer.echo(f"{path}: valid ({len(engine.rules)} rules, sha256 {engine.policy.sha256})")


@policy_cli.command("simulate")
def policy_simulate(
    candidate: Path,
    since: Annotated[datetime | None, typer.Option(help="Only decisions since this date.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Re-decide past decisions from their stored facts under a candidate policy."""
    from app.policy_versions import simulate

    engine = _load_or_exit(candidate)
    settings = Settings()
    moment = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    with _sessions(settings, writer=False)() as session:
        result = simulate(session, engine, settings.secret(), since=moment)
    rows = sorted(result.transitions.items(), key=lambda item: -item[1])
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "candidate": engine.policy.sha256,
                    "evaluated": result.evaluated,
                    "changed": result.changed,
                    "not_replayable": result.not_replayable,
                    "transitions": [
                        {"from": f, "to": t, "rule": r, "count": n} for (f, t, r), n in rows
                    ],
                }
            )
        )
        return
    typer.echo(
        f"candidate {engine.policy.sha256[:12]}: {result.evaluated} decisions re-evaluated, "
        f"{result.changed} would change ({result.not_replayable} not replayable)"
    )
    for (old, new, rule), count in rows:
        typer.echo(f"  {count:6}  {old} -> {new}  by {rule}")


@ledger_cli.command("verify")
def ledger_verify(
    anchor: Annotated[
        str | None,
        typer.Option(help="ID:HASH of a head noted earlier (from a previous verify)"),
    ] = None,
) -> None:
    """Walk the decision log's hash chain and name the first broken record; print the head
    to note outside Mailroom, and check a head noted earlier (--anchor) is still there."""
    from app import ledger

    noted = _anchor(anchor) if anchor else None
    with _sessions(Settings(), writer=False)() as session:
        result = ledger.verify(session, anchor=noted)
    if result.ok:
        typer.echo(f"ledger intact: {result.checked} records verified")
        if result.head_id is not None:
            typer.echo(f"head: {result.head_id}:{result.head_hash}")
        return
    where = f" at record {result.first_broken}" if result.first_broken else ""
    typer.echo(f"ledger BROKEN{where}: {result.problem}")
    raise typer.Exit(1)


def _anchor(value: str) -> ledger.Anchor:
    from app import ledger

    # ASCII digits and hex only: str.isdigit() passes "²", which int() refuses, and a hash
    # that is not hex could only ever be reported as a log that differs from the anchor.
    found = re.fullmatch(r"([1-9][0-9]*):([0-9a-fA-F]{64})", value)  # ids start at 1
    if found is None:
        raise typer.BadParameter("--anchor takes ID:HASH, as `ledger verify` prints the head")
    return ledger.Anchor(int(found[1]), found[2].lower())


def main() -> None:
    try:
        cli(prog_name="mailroom")
    except ValidationError as error:  # every command reads its settings first
        problems = invalid_settings(error)
        refused = f"error: invalid settings in the environment:\n{problems}"
        typer.echo(fault_report(error) if problems is None else refused, err=True)
        raise SystemExit(1) from None
    except StartError as error:  # an address in use, an empty secret.key
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None
    except Exception as error:  # a fault or a bug: say where, never what
        typer.echo(fault_report(error), err=True)
        raise SystemExit(1) from None


def fault_report(error: BaseException) -> str:
    """An unexpected error as its type and the frames it came through. Not its message, nor
    any variable: a database error quotes the values it was given, which may be mail."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames[:-1] if "site-packages" not in f.filename] + frames[-1:]
    where = [f"  {frame.filename}:{frame.lineno} in {frame.name}" for frame in ours]
    return "\n".join(
        [
            f"error: {type(error).__module__}.{type(error).__qualname__} (its text is left out: "
            "it may quote mail); it came through:",
            *where,
        ]
    )


if __name__ == "__main__":
    main()
