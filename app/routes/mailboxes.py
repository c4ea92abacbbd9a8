"""Serve: /api/v1/mailboxes: add mailboxes, see how each sync is doing; admins; no secrets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from app.mailbox_schemas import MailboxIn, MailboxList, MailboxOut, MailboxPatch
from app.mailboxes import (
    add_mailbox,
    describe_mailboxes,
    remove_mailbox,
    set_enabled,
    set_password,
)
from app.routes.deps import SessionDep, allow
from app.routes.pagination import Id
from app.security import Principal, Role

router = APIRouter(prefix="/mailboxes", tags=["mailboxes"])
Admin = Annotated[Principal, Depends(allow(Role.ADMIN))]


@router.get("", response_model=MailboxList)
def list_mailboxes(session: SessionDep, _admin: Admin) -> MailboxList:
    """Every mailbox: last sync, lag, backlog, bodies read and skipped, the last error."""
    return MailboxList(items=describe_mailboxes(session))


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
    (created,) = describe_mailboxes(session, only=mailbox.id)
    return created


@router.patch("/{mailbox_id}", response_model=MailboxOut)
def patch_mailbox(
    request: Request, mailbox_id: Id, body: MailboxPatch, session: SessionDep, _admin: Admin
) -> MailboxOut:
    """Pause (`enabled: false`) or resume a mailbox's sync, give it a new `password`, or
    both at once (the new password, and resume a mailbox paused for a refused login).
    Paused, it keeps its password and where each folder stands; `mailroom serve` ends its
    session within half a minute. A new password is stored encrypted, never shown, and used
    from the mailbox's next login; where each folder stands is kept."""
    if body.enabled is None and body.password is None:
        raise HTTPException(422, "Give enabled, password, or both.")
    if body.password is not None:
        secret = request.app.state.runtime.pipeline.secret
        try:
            found = set_password(session, secret, mailbox_id, body.password.get_secret_value())
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        if not found:
            raise HTTPException(404, "No such mailbox.")
    if body.enabled is not None and not set_enabled(session, mailbox_id, body.enabled):
        raise HTTPException(404, "No such mailbox.")
    (changed,) = describe_mailboxes(session, only=mailbox_id)
    return changed


@router.delete("/{mailbox_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_mailbox(mailbox_id: Id, session: SessionDep, _admin: Admin) -> Response:
    """Remove a mailbox: its password and folder positions are forgotten, and `mailroom
    serve` stops its sync within half a minute. What it filed stays."""
    if not remove_mailbox(session, mailbox_id):
        raise HTTPException(404, "No such mailbox.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
