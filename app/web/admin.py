"""Serve: the administrator's pages: employees, API tokens, mailboxes (never anyone's mail)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from app import employees
from app.mailboxes import describe_mailboxes, remove_mailbox, set_enabled
from app.models import ApiToken, Employee, MessageOwner
from app.routes.pagination import Id
from app.schemas import Text
from app.security import ISSUED_ON_THE_SERVER, Role, create_token
from app.web.auth import AdminUser, CsrfChecked, WebUser
from app.web.render import PageRoute, PageSession, page

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def _admin_page(
    request: Request, session: Session, user: WebUser, extra: dict[str, Any]
) -> HTMLResponse:
    filed = (
        sa.select(MessageOwner.employee_id, sa.func.count())
        .group_by(MessageOwner.employee_id)
        .subquery()
    )
    employees = session.execute(
        sa.select(Employee, filed.c[1])
        .outerjoin(filed, filed.c.employee_id == Employee.id)
        .order_by(Employee.email)
    ).all()
    tokens = session.execute(
        sa.select(ApiToken, Employee.email)
        .outerjoin(Employee, Employee.id == ApiToken.employee_id)
        .order_by(ApiToken.id.desc())
    ).all()
    context = {
        "employees": employees,
        "tokens": tokens,
        "roles": [r for r in Role if r is not Role.EMPLOYEE],  # see post_token's docstring
        "new_token": None,
        "mailboxes": describe_mailboxes(session),  # their state only: no field holds a password
        "ago": ago,
    }
    return page(request, "admin.html", user, context | extra)


def ago(seconds: float | None) -> str:
    """How long since a mailbox's last sync, in words an admin reads at a glance."""
    if seconds is None:
        return "never"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{max(int(seconds), 0)} s ago"


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request, session: PageSession, user: AdminUser) -> HTMLResponse:
    return _admin_page(request, session, user, {})


@router.post("/admin/employees", dependencies=[CsrfChecked])
def add_employee(
    session: PageSession,
    _user: AdminUser,
    email: Annotated[str, Form()],
    name: Annotated[Text, Form(max_length=200)] = "",
) -> RedirectResponse:
    """As the API and the command line add one (app/employees.py): an address that is
    already an employee's, as their email or an alias, is refused."""
    try:
        employees.add_employee(session, email, name=name.strip())
    except employees.InvalidAddressError:
        return RedirectResponse("/admin?note=employee-invalid", status_code=303)
    except employees.AddressTakenError:
        return RedirectResponse("/admin?note=employee-exists", status_code=303)
    return RedirectResponse("/admin?note=employee-added", status_code=303)


@router.post("/admin/tokens", response_class=HTMLResponse, dependencies=[CsrfChecked])
def new_token(
    request: Request,
    session: PageSession,
    user: AdminUser,
    role: Annotated[Role, Form()],
    label: Annotated[Text, Form(max_length=200)] = "",
) -> HTMLResponse:
    """Issue a token and show it on this one response: only its hash is stored. Not an
    employee's (app/routes/tokens.py post_token says why)."""
    if role is Role.EMPLOYEE:
        raise HTTPException(status.HTTP_403_FORBIDDEN, ISSUED_ON_THE_SERVER)
    try:
        token = create_token(session, role=role, employee_id=None, label=label)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(error)) from None
    session.flush()
    response = _admin_page(request, session, user, {"new_token": token})
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/admin/tokens/{token_id}/revoke", dependencies=[CsrfChecked])
def revoke_token(session: PageSession, _user: AdminUser, token_id: Id) -> RedirectResponse:
    revoked = session.execute(
        sa.update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    if not revoked.rowcount:  # type: ignore[attr-defined]
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such active token.")
    return RedirectResponse("/admin?note=token-revoked", status_code=303)


@router.post("/admin/mailboxes/{mailbox_id}/remove", dependencies=[CsrfChecked])
def remove(session: PageSession, _user: AdminUser, mailbox_id: Id) -> RedirectResponse:
    """As DELETE /api/v1/mailboxes/{id}: the password and positions go, the mail stays."""
    if not remove_mailbox(session, mailbox_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such mailbox.")
    return RedirectResponse("/admin?note=mailbox-removed", status_code=303)


@router.post("/admin/mailboxes/{mailbox_id}/pause", dependencies=[CsrfChecked])
def pause(session: PageSession, _user: AdminUser, mailbox_id: Id) -> RedirectResponse:
    return _enable(session, mailbox_id, enabled=False)


@router.post("/admin/mailboxes/{mailbox_id}/resume", dependencies=[CsrfChecked])
def resume(session: PageSession, _user: AdminUser, mailbox_id: Id) -> RedirectResponse:
    return _enable(session, mailbox_id, enabled=True)


def _enable(session: Session, mailbox_id: int, *, enabled: bool) -> RedirectResponse:
    """As PATCH /api/v1/mailboxes/{id}: paused, a mailbox keeps its password and positions."""
    if not set_enabled(session, mailbox_id, enabled):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such mailbox.")
    note = "mailbox-resumed" if enabled else "mailbox-paused"
    return RedirectResponse(f"/admin?note={note}", status_code=303)
