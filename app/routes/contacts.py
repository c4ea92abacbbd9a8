"""Serve: /api/v1/contacts and /api/v1/companies, the people and organizations filed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from app import crm, webhooks
from app.access_schemas import ContactPatchIn
from app.routes.deps import SessionDep, allow
from app.routes.pagination import Cursor, Id, IdFilter, Limit, Time, decode_cursor, encode_cursor
from app.schemas import CompanyOut, CompanyWithContactsOut, ContactOut, Page, Text
from app.security import Principal, Role

router = APIRouter(tags=["contacts"])
Reader = Annotated[
    Principal, Depends(allow(Role.EMPLOYEE, Role.ADMIN, Role.COMPLIANCE, scope="contacts:read"))
]
Writer = Annotated[Principal, Depends(allow(Role.EMPLOYEE, scope="contacts:write"))]


Search = Annotated[
    Text | None,
    Query(min_length=1, max_length=200, description="Text in the name, address or company."),
]


@router.get("/contacts", response_model=Page[ContactOut])
def list_contacts(
    session: SessionDep,
    _principal: Reader,
    limit: Limit = 50,
    cursor: Cursor = None,
    q: Search = None,
    company_id: IdFilter = None,
    updated_since: Time = None,
) -> Page[ContactOut]:
    """Contacts, newest first, each with its company; `q` searches name, address and company
    (case-insensitive), `updated_since` keeps those changed since (for syncing)."""
    where = crm.ContactFilter(q=q, company_id=company_id, updated_since=updated_since)
    items = crm.list_contacts(session, before=decode_cursor(cursor), limit=limit, where=where)
    return Page(items=items, next_cursor=encode_cursor([c.id for c in items], limit))


@router.get("/contacts/{contact_id}", response_model=ContactOut)
def get_contact(session: SessionDep, _principal: Reader, contact_id: Id) -> ContactOut:
    found = crm.contacts_by_id(session, [contact_id])
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such contact.")
    return found[0]


@router.get("/companies", response_model=Page[CompanyOut])
def list_companies(
    session: SessionDep,
    _principal: Reader,
    limit: Limit = 50,
    cursor: Cursor = None,
    q: Search = None,
) -> Page[CompanyOut]:
    """Companies, newest first, one per business domain; `q` searches name and domain."""
    items = crm.list_companies(session, before=decode_cursor(cursor), limit=limit, q=q)
    return Page(items=items, next_cursor=encode_cursor([c.id for c in items], limit))


@router.get("/companies/{company_id}", response_model=CompanyWithContactsOut)
def get_company(session: SessionDep, _principal: Reader, company_id: Id) -> CompanyWithContactsOut:
    """A company with its contacts (the newest 100; all: /contacts?company_id=)."""
    found = crm.company_with_contacts(session, company_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such company.")
    return found


@router.patch("/contacts/{contact_id}", response_model=ContactOut)
def patch_contact(
    session: SessionDep, _writer: Writer, contact_id: Id, body: ContactPatchIn
) -> ContactOut:
    """Correct a contact's name, or clear it; mail never fills it again. Nothing else about a
    contact is writable."""
    now = datetime.now(UTC)
    renamed = crm.rename_contact(session, contact_id, body.name, now)
    if renamed is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such contact.")
    webhooks.emit(session, "contact.updated", {"contact_id": contact_id}, now)
    return renamed
