"""Serve: `mailroom login-link EMAIL`, a one-time sign-in link for the web pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from app.db import connected_engine, migrate, session_factory, transaction
from app.security import Role
from app.settings import Settings


def login_link(
    email: Annotated[str, typer.Argument(help="The employee who signs in.")],
    role: Annotated[Role, typer.Option(help="What they sign in as.")] = Role.EMPLOYEE,
    base_url: Annotated[
        str | None,
        typer.Option(envvar="MAILROOM_PUBLIC_URL", help="Where people reach the pages."),
    ] = None,
) -> None:
    """Print a sign-in link (alone, on stdout): it works once, within 15 minutes."""
    from app.employees import find_employee
    from app.web.auth import LINK_LIFETIME, create_login_link  # FastAPI: imported when used

    if role is Role.INTEGRATION:
        typer.echo("error: integrations use API tokens, not the pages", err=True)
        raise typer.Exit(1)
    settings = Settings()
    settings.ensure_data_dir()
    url = settings.resolved_database_url
    if settings.auto_migrate:
        migrate(url)
    engine = connected_engine(url)
    try:
        with transaction(session_factory(engine)) as session:
            employee = find_employee(session, email)
            if employee is None:
                typer.echo(f"error: no employee {email}", err=True)
                raise typer.Exit(1)
            token = create_login_link(session, employee.id, role, datetime.now(UTC))
    finally:
        engine.dispose()
    base = (base_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
    typer.echo(f"{base}/sign-in/link/{token}")
    minutes = int(LINK_LIFETIME.total_seconds() // 60)
    typer.echo(f"(valid once, for {minutes} minutes, as {role.value})", err=True)
