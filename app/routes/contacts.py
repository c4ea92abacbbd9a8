"""Serve: /api/v1/contacts and /api/v1/companies, the people and organizations filed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status

from app import crm, webhooks
from app.access_schemas import ContactPatchIn
from app.models import Contact
from app.routes.deps import SessionDep, allow
from app.routes.pagination import Cursor, Id, Limit, decode_cursor, encode_cursor
from app.schemas import CompanyOut, ContactOut, Page
from app.security import Principal, Role

router = APIRouter(tags=["contacts"])
Reader = Annotated[
    Principal, Depends(allow(Role.EMPLOYEE, Role.ADMIN, Role.COMPLIANCE, scope="contacts:read"))
]
Writer = Annotated[Principal, Depends(allow(Role.EMPLOYEE, scope="contacts:write"))]


@router.get("/contacts", response_model=Page[ContactOut])
def list_contacts(
    session: SessionDep, _principal: Reader, limit: Limit = 50, cursor: Cursor = None
) -> Page[ContactOut]:
    """Contacts, newest first, each with its company."""
    items = crm.list_contacts(session, before=decode_cursor(cursor), limit=limit)
    return Page(items=items, next_cursor=encode_cursor([c.id for c in items], limit))


@router.get("/contacts/{contact_id}", response_model=ContactOut)
def get_contact(session: SessionDep, _principal: Reader, contact_id: Id) -> ContactOut:
    found = crm.contacts_by_id(session, [contact_id])
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such contact.")
    return found[0]


@router.get("/companies", response_model=Page[CompanyOut])
def list_companies(
    session: SessionDep, _principal: Reader, limit: Limit = 50, cursor: Cursor = None
) -> Page[CompanyOut]:
    """Companies, newest first, one per business domain."""
    items = crm.list_companies(session, before=decode_cursor(cursor), limit=limit)
    return Page(items=items, next_cursor=encode_cursor([c.id for c in items], limit))


@router.patch("/contacts/{contact_id}", response_model=ContactOut)
def patch_contact(
    session: SessionDep, _writer: Writer, contact_id: Id, body: ContactPatchIn
) -> ContactOut:
    """Correct a contact's name; nothing else about a contact is writable."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such contact.")
    now = datetime.now(UTC)
    contact.name, contact.updated_at = body.name, now
    session.flush()
    webhooks.emit(session, "contact.updated", {"contact_id": contact_id}, now)
    return crm.contacts_by_id(session, [contact_id])[0]
