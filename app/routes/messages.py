"""Serve: /api/v1/messages, the captured mail each principal may see."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status

from app import crm
from app.access_schemas import VisibilityIn
from app.routes.deps import EmployeeDep, SessionDep, allow
from app.routes.pagination import Cursor, Id, IdFilter, Limit, Time, decode_cursor, encode_cursor
from app.schemas import MessageOut, Page
from app.security import Principal, Role

router = APIRouter(prefix="/messages", tags=["messages"])
Reader = Annotated[Principal, Depends(allow(Role.EMPLOYEE, scope="messages:read"))]


@router.get("", response_model=Page[MessageOut])
def list_messages(
    session: SessionDep,
    principal: Reader,
    limit: Limit = 50,
    cursor: Cursor = None,
    contact_id: IdFilter = None,
    company_id: IdFilter = None,
    employee_id: IdFilter = None,
    thread_id: IdFilter = None,
    since: Time = None,
    until: Time = None,
) -> Page[MessageOut]:
    """Captured messages, newest first: an employee's own and colleagues' shared ones; by a
    contact or company taking part, an owning employee, a thread, and sent `since` <= t <
    `until`."""
    where = crm.MessageFilter(
        contact_id=contact_id,
        company_id=company_id,
        employee_id=employee_id,
        thread_id=thread_id,
        since=since,
        until=until,
    )
    items = crm.list_messages(
        session, principal, before=decode_cursor(cursor), limit=limit, where=where
    )
    return Page(items=items, next_cursor=encode_cursor([m.id for m in items], limit))


@router.get("/{message_id}", response_model=MessageOut)
def get_message(session: SessionDep, principal: Reader, message_id: Id) -> MessageOut:
    found = crm.get_message(session, principal, message_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such message.")
    return found


@router.patch(
    "/{message_id}",
    response_model=MessageOut,
    responses={
        403: {"description": "Not an owner"},
        409: {"description": "Would share a colleague's copy more widely"},
    },
)
def patch_message(
    session: SessionDep, principal: EmployeeDep, message_id: Id, body: VisibilityIn
) -> MessageOut:
    """Change who sees a message you captured (shared, subject_only, private). You may always
    narrow it; widening needs you to be its only owner."""
    try:
        found = crm.set_visibility(session, principal, message_id, body.visibility.value)
    except PermissionError as error:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(error)) from None
    except ValueError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such message.")
    return found
