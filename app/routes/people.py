"""Serve: threads, who knows whom, contact history, duplicates and merging."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, status

from app import duplicates, relationships, threads
from app.models import Contact, ContactChange
from app.routes.deps import SessionDep, allow
from app.schemas import (
    ContactChangeOut,
    ContactOut,
    DuplicateOut,
    MergeIn,
    RelationshipOut,
    ThreadOut,
)
from app.security import Principal, Role

router = APIRouter(tags=["people"])
ContactReader = Annotated[
    Principal, Depends(allow(Role.EMPLOYEE, Role.ADMIN, Role.COMPLIANCE, scope="contacts:read"))
]
ContactWriter = Annotated[
    Principal, Depends(allow(Role.EMPLOYEE, Role.ADMIN, scope="contacts:write"))
]
MessageReader = Annotated[Principal, Depends(allow(Role.EMPLOYEE, scope="messages:read"))]


@router.get("/threads/{thread_id}", response_model=ThreadOut)
def get_thread(session: SessionDep, principal: MessageReader, thread_id: int) -> ThreadOut:
    """A conversation, oldest message first, with only the messages the caller may see."""
    found = threads.read_thread(session, principal, thread_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such thread.")
    return found


@router.get("/contacts/duplicates", response_model=list[DuplicateOut])
def list_duplicates(session: SessionDep, _principal: ContactReader) -> list[DuplicateOut]:
    """Contacts that look like one person, with the reason; merge them with /merge."""
    return duplicates.find_duplicates(session)


@router.get("/contacts/{contact_id}/relationships", response_model=list[RelationshipOut])
def contact_relationships(
    session: SessionDep, _principal: ContactReader, contact_id: int
) -> list[RelationshipOut]:
    """Who on our team knows this person, strongest relationship first."""
    _contact_or_404(session, contact_id)
    return relationships.for_contact(session, contact_id, datetime.now(UTC))


@router.get("/contacts/{contact_id}/history", response_model=list[ContactChangeOut])
def contact_history(
    session: SessionDep, _principal: ContactReader, contact_id: int
) -> list[ContactChangeOut]:
    """Every change to the contact, newest first, with the message that showed it."""
    _contact_or_404(session, contact_id)
    rows = session.scalars(
        sa.select(ContactChange)
        .where(ContactChange.contact_id == contact_id)
        .order_by(ContactChange.id.desc())
        .limit(500)
    )
    return [ContactChangeOut.model_validate(r) for r in rows]


@router.post("/contacts/{contact_id}/merge", response_model=ContactOut)
def merge_contact(
    session: SessionDep, _principal: ContactWriter, contact_id: int, body: MergeIn
) -> ContactOut:
    """Merge this contact into `into`; its address keeps leading to `into`."""
    try:
        return duplicates.merge(session, contact_id, body.into, datetime.now(UTC))
    except LookupError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    except duplicates.MergeRefusedError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error


@router.get("/employees/{employee_id}/contacts", response_model=list[RelationshipOut])
def employee_contacts(
    session: SessionDep, principal: ContactReader, employee_id: int
) -> list[RelationshipOut]:
    """The contacts an employee knows, strongest first; an employee may ask only for
    themself."""
    if principal.role is Role.EMPLOYEE and principal.employee_id != employee_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such employee.")
    return relationships.for_employee(session, employee_id, datetime.now(UTC))


def _contact_or_404(session: SessionDep, contact_id: int) -> None:
    if session.get(Contact, contact_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such contact.")
