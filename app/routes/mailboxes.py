"""Serve: /api/v1/mailboxes: add mailboxes, see how each sync is doing; admins; no secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from app.mailbox_schemas import FolderOut, MailboxIn, MailboxList, MailboxOut
from app.mailboxes import add_mailbox
from app.models import Employee, Mailbox, MailboxFolder
from app.routes.deps import SessionDep, allow
from app.security import Principal, Role

router = APIRouter(prefix="/mailboxes", tags=["mailboxes"])
Admin = Annotated[Principal, Depends(allow(Role.ADMIN))]


@router.get("", response_model=MailboxList)
def list_mailboxes(session: SessionDep, _admin: Admin) -> MailboxList:
    """Every mailbox: last sync, lag, backlog, bodies read and skipped, the last error."""
    return MailboxList(items=_mailboxes(session))


@router.post("", response_model=MailboxOut, status_code=status.HTTP_201_CREATED)
def create_mailbox(
    request: Request, body: MailboxIn, session: SessionDep, _admin: Admin
) -> MailboxOut:
    """Add a mailbox; `mailroom serve` starts syncing it within half a minute. The password is
    stored encrypted and never shown again."""
    if body.journal == (body.employee is not None):
        raise HTTPException(422, "Give an employee, or journal: true for a journal mailbox.")
    try:
        mailbox = add_mailbox(
            session,
            request.app.state.runtime.pipeline.secret,
            employee=body.employee.lower() if body.employee else None,
            host=body.host,
            port=body.port,
            username=body.username,
            password=body.password.get_secret_value(),
            folders=body.folders,
            tls=body.tls,
            since=body.since,
        )
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    (created,) = _mailboxes(session, only=mailbox.id)
    return created


def _mailboxes(session: Session, *, only: int | None = None) -> list[MailboxOut]:
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
