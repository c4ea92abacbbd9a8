"""Serve: /api/v1/mailboxes, how each synced mailbox is doing; for admins, never a secret."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends

from app.mailbox_schemas import FolderOut, MailboxList, MailboxOut
from app.models import Employee, Mailbox, MailboxFolder
from app.routes.deps import SessionDep, allow
from app.security import Principal, Role

router = APIRouter(prefix="/mailboxes", tags=["mailboxes"])
Admin = Annotated[Principal, Depends(allow(Role.ADMIN))]


@router.get("", response_model=MailboxList)
def list_mailboxes(session: SessionDep, _admin: Admin) -> MailboxList:
    """Every mailbox: last sync, lag, backlog, bodies read and skipped, the last error."""
    now = datetime.now(UTC)
    folders: dict[int, list[FolderOut]] = {}
    for folder in session.scalars(sa.select(MailboxFolder).order_by(MailboxFolder.id)):
        folders.setdefault(folder.mailbox_id, []).append(FolderOut.model_validate(folder))
    rows = session.execute(
        sa.select(Mailbox, Employee.email)
        .outerjoin(Employee, Employee.id == Mailbox.employee_id)
        .order_by(Mailbox.id)
    )
    items = [
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
    return MailboxList(items=items)
