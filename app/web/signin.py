"""Serve: the sign-in pages: a one-time link or a pasted API token, and sign-out."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.security import Role
from app.web import auth
from app.web.auth import CsrfChecked, OptionalUser, PresessionCsrfChecked, UserDep
from app.web.render import PageRoute, PageSession, harden, templates

router = APIRouter(include_in_schema=False, route_class=PageRoute)

HOME = {Role.EMPLOYEE: "/mail", Role.COMPLIANCE: "/compliance", Role.ADMIN: "/admin"}


def _presession_page(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """A page whose form works before sign-in: tied to a fresh Strict pre-session cookie."""
    cookie = request.cookies.get(auth.PRESESSION_COOKIE) or secrets.token_urlsafe(32)
    context = {"csrf": auth.csrf_token(auth.secret_of(request), cookie), "user": None, **context}
    response = harden(templates.TemplateResponse(request, name, context, status_code=status_code))
    auth.set_cookie(request, response, auth.PRESESSION_COOKIE, cookie)
    return response


def _signed_in(request: Request, cookie: str, role: Role) -> Response:
    response = RedirectResponse(HOME.get(role, "/policy"), status_code=303)
    auth.set_cookie(request, response, auth.SESSION_COOKIE, cookie)
    response.delete_cookie(auth.PRESESSION_COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def home(user: OptionalUser) -> Response:
    if user is None:
        return RedirectResponse("/sign-in", status_code=303)
    return RedirectResponse(HOME.get(user.role, "/policy"), status_code=303)


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request) -> HTMLResponse:
    return _presession_page(request, "sign_in.html", {"problem": None})


@router.post("/sign-in", dependencies=[PresessionCsrfChecked])
def sign_in_with_token(
    request: Request, session: PageSession, token: Annotated[str, Form()] = ""
) -> Response:
    opened = auth.session_from_api_token(session, token, datetime.now(UTC))
    if opened is None:
        problem = "That token is unknown, revoked, or for an integration."
        return _presession_page(request, "sign_in.html", {"problem": problem}, status_code=401)
    cookie, role = opened
    return _signed_in(request, cookie, role)


@router.get("/sign-in/link/{token}", response_class=HTMLResponse)
def login_link_page(request: Request, token: str) -> HTMLResponse:
    """Opening the link only shows a button: link scanners in mail filters must not use it up."""
    return _presession_page(request, "sign_in_link.html", {"token": token})


@router.post("/sign-in/link", dependencies=[PresessionCsrfChecked])
def redeem_link(request: Request, session: PageSession, token: Annotated[str, Form()]) -> Response:
    now = datetime.now(UTC)
    link = auth.redeem_login_link(session, token, now)
    if link is None:
        problem = "This sign-in link is unknown, already used, or expired. Ask for a new one."
        return _presession_page(request, "sign_in.html", {"problem": problem}, status_code=401)
    role = Role(link.role)
    cookie = auth.start_session(session, role=role, employee_id=link.employee_id, now=now)
    return _signed_in(request, cookie, role)


@router.post("/sign-out", dependencies=[CsrfChecked])
def sign_out(request: Request, session: PageSession, _user: UserDep) -> Response:
    auth.end_session(session, request.cookies.get(auth.SESSION_COOKIE, ""))
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response
