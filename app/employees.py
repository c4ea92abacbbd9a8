"""Serve: adding an employee and the addresses they write from, each one person's only.

Shared by `POST /api/v1/employees` and `mailroom employees add`, so that both refuse the
same addresses. It never commits: the request or the command does.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import Employee, EmployeeAlias
from capture.parse import normalize_address


class InvalidAddressError(ValueError):
    """An address that is not a mailbox."""


class AddressTakenError(ValueError):
    """An address that is already an employee's, as their email or an alias."""


def add_employee(
    session: Session, email: str, *, name: str = "", aliases: Sequence[str] = ()
) -> Employee:
    """A new employee; the addresses given twice are kept once."""
    addresses = [normalize_address(a.strip()) for a in [email, *aliases]]
    if any(a is None for a in addresses):
        raise InvalidAddressError("not a valid email address")
    primary, *others = dict.fromkeys(str(a).lower() for a in addresses)
    taken = _taken(session, [primary, *others])
    if taken is not None:
        raise AddressTakenError(f"{taken} is already an employee's address")
    try:  # another request may add the same address meanwhile (a form sent twice at once)
        with session.begin_nested():
            employee = Employee(email=primary, name=name)
            session.add(employee)
            session.flush()
            session.add_all(EmployeeAlias(employee_id=employee.id, address=a) for a in others)
            session.flush()
    except sa.exc.IntegrityError:
        raise AddressTakenError("an address was made an employee's meanwhile") from None
    return employee


def find_employee(session: Session, address: str) -> Employee | None:
    """The employee with this address, as their email or an alias, however it is written (any
    case, a Unicode domain, spaces around): compared as `add_employee` stores addresses."""
    normalized = normalize_address(address.strip())
    if normalized is None:
        return None
    wanted = normalized.lower()
    by_alias = sa.select(EmployeeAlias.employee_id).where(EmployeeAlias.address == wanted)
    return session.scalar(
        sa.select(Employee).where(sa.or_(Employee.email == wanted, Employee.id.in_(by_alias)))
    )


def _taken(session: Session, addresses: list[str]) -> str | None:
    """The first of these addresses that is already an employee's email or alias."""
    return session.scalars(
        sa.union(
            sa.select(Employee.email).where(Employee.email.in_(addresses)),
            sa.select(EmployeeAlias.address).where(EmployeeAlias.address.in_(addresses)),
        ).limit(1)
    ).first()
