"""Serve: /api/v1/employees, who may submit mail (admins); never anything they captured."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, status

from app import employees
from app.access_schemas import EmployeeIn, EmployeeOut
from app.models import Employee, EmployeeAlias
from app.routes.deps import AdminDep, SessionDep
from app.routes.pagination import Cursor, Limit, decode_cursor, encode_cursor
from app.schemas import Page

router = APIRouter(prefix="/employees", tags=["employees"])


def _out(session: SessionDep, employees: list[Employee]) -> list[EmployeeOut]:
    aliases: dict[int, list[str]] = defaultdict(list)
    for employee_id, address in session.execute(
        sa.select(EmployeeAlias.employee_id, EmployeeAlias.address)
        .where(EmployeeAlias.employee_id.in_([e.id for e in employees]))
        .order_by(EmployeeAlias.id)
    ):
        aliases[employee_id].append(address)
    return [
        EmployeeOut(
            id=e.id, email=e.email, name=e.name, aliases=aliases[e.id], created_at=e.created_at
        )
        for e in employees
    ]


@router.get("", response_model=Page[EmployeeOut])
def list_employees(
    session: SessionDep, _admin: AdminDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[EmployeeOut]:
    """Employees, newest first, with their aliases."""
    query = sa.select(Employee).order_by(Employee.id.desc()).limit(limit)
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(Employee.id < before)
    items = _out(session, list(session.scalars(query)))
    return Page(items=items, next_cursor=encode_cursor([e.id for e in items], limit))


@router.post("", response_model=EmployeeOut, status_code=status.HTTP_201_CREATED)
def add_employee(session: SessionDep, _admin: AdminDep, body: EmployeeIn) -> EmployeeOut:
    """Add an employee who may submit mail, with the other addresses they write from."""
    try:
        employee = employees.add_employee(session, body.email, name=body.name, aliases=body.aliases)
    except employees.InvalidAddressError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "Not a valid email address."
        ) from None
    except employees.AddressTakenError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{error}.") from None
    return _out(session, [employee])[0]
