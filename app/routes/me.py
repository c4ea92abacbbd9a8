"""Serve: /api/v1/me, an employee's own settings: pause capture, private tags, personal contacts."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy.dialects import postgresql, sqlite

from app.access_schemas import PersonalContactIn, PersonalContactOut, SettingsIn, SettingsOut
from app.models import Employee, PersonalContact
from app.routes.deps import EmployeeDep, SessionDep
from app.routes.pagination import Cursor, Id, Limit, decode_cursor, encode_cursor
from app.schemas import Page
from app.security import Principal
from policies.observe import address_token

router = APIRouter(prefix="/me", tags=["me"])


def _employee(session: SessionDep, principal: Principal) -> Employee:
    found = session.get(Employee, principal.employee_id)
    if found is None:  # deleted while the request ran
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such employee.")
    return found


@router.get("/settings", response_model=SettingsOut)
def get_settings(session: SessionDep, principal: EmployeeDep) -> SettingsOut:
    employee = _employee(session, principal)
    return SettingsOut(capture_paused=employee.capture_paused, private_tags=employee.private_tags)


@router.patch("/settings", response_model=SettingsOut)
def patch_settings(session: SessionDep, principal: EmployeeDep, body: SettingsIn) -> SettingsOut:
    """Pause or resume capture, or set your private subject tags (mail tagged so is dropped)."""
    employee = _employee(session, principal)
    if body.capture_paused is not None:
        employee.capture_paused = body.capture_paused
    if body.private_tags is not None:
        employee.private_tags = sorted({t.lower() for t in body.private_tags})
    session.flush()
    return SettingsOut(capture_paused=employee.capture_paused, private_tags=employee.private_tags)


@router.get("/personal-contacts", response_model=Page[PersonalContactOut])
def list_personal_contacts(
    session: SessionDep, principal: EmployeeDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[PersonalContactOut]:
    """Your personal-contacts list. Only keyed digests are kept, so addresses are not shown."""
    query = (
        sa.select(PersonalContact)
        .where(PersonalContact.employee_id == principal.employee_id)
        .order_by(PersonalContact.id.desc())
        .limit(limit)
    )
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(PersonalContact.id < before)
    items = [PersonalContactOut.model_validate(p) for p in session.scalars(query)]
    return Page(items=items, next_cursor=encode_cursor([p.id for p in items], limit))


@router.post(
    "/personal-contacts", response_model=PersonalContactOut, status_code=status.HTTP_201_CREATED
)
def add_personal_contact(
    request: Request, session: SessionDep, principal: EmployeeDep, body: PersonalContactIn
) -> PersonalContactOut:
    """Mail with this address is never captured for you again (adding it twice is harmless)."""
    token = address_token(request.app.state.runtime.pipeline.secret, body.address)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(PersonalContact)
        .values(
            employee_id=principal.employee_id, address_token=token, created_at=datetime.now(UTC)
        )
        .on_conflict_do_nothing(index_elements=["employee_id", "address_token"])
    )
    row = session.scalars(
        sa.select(PersonalContact).where(
            PersonalContact.employee_id == principal.employee_id,
            PersonalContact.address_token == token,
        )
    ).one()
    return PersonalContactOut.model_validate(row)


@router.delete("/personal-contacts/{entry_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_personal_contact(session: SessionDep, principal: EmployeeDep, entry_id: Id) -> Response:
    gone = session.execute(
        sa.delete(PersonalContact).where(
            PersonalContact.id == entry_id, PersonalContact.employee_id == principal.employee_id
        )
    )
    if not gone.rowcount:  # type: ignore[attr-defined]
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such entry on your list.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
