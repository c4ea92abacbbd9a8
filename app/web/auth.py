"""Serve: signing in to the pages: one-time links, browser sessions, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request, Response, status
from sqlalchemy.orm import Session

from app.models import ApiToken, Employee, LoginLink, WebSession
from app.security import Principal, Role, authenticate, hash_token

LINK_LIFETIME = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(hours=12)
SESSION_COOKIE = "mailroom_session"
# Before sign-in, forms are tied to this cookie instead, so that no other site can sign a
# browser in to an account of its choosing (login CSRF).
PRESESSION_COOKIE = "mailroom_presession"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class WebUser:
    """Who a signed-in browser acts as."""

    session_id: int
    role: Role
    employee_id: int | None
    email: str
    csrf: str

    @property
    def principal(self) -> Principal:
        """The same principal an API token of this role would be, for the shared queries."""
        return Principal(
            token_id=0, role=self.role, employee_id=self.employee_id, scopes=frozenset()
        )


def create_login_link(session: Session, employee_id: int, role: Role, now: datetime) -> str:
    """A random single-use token for `employee_id`; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    session.add(
        LoginLink(
            token_hash=hash_token(token),
            employee_id=employee_id,
            role=role.value,
            created_at=now,
            expires_at=now + LINK_LIFETIME,
        )
    )
    return token


def redeem_login_link(session: Session, token: str, now: datetime) -> LoginLink | None:
    """Mark the link used and return it, or None if unknown, used or expired.

    The conditional UPDATE is what makes it single use, even for two racing requests.
    """
    digest = hash_token(token)
    used = session.execute(
        sa.update(LoginLink)
        .where(
            LoginLink.token_hash == digest,
            LoginLink.used_at.is_(None),
            LoginLink.expires_at > now,
        )
        .values(used_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.scalar(sa.select(LoginLink).where(LoginLink.token_hash == digest))


def start_session(
    session: Session,
    *,
    role: Role,
    employee_id: int | None,
    now: datetime,
    api_token_id: int | None = None,
) -> str:
    """A new browser session; returns the cookie value (stored only as a hash).

    Expired sessions and spent links are swept here: signing in is rare enough to pay for it.
    """
    session.execute(sa.delete(WebSession).where(WebSession.expires_at <= now))
    session.execute(
        sa.delete(LoginLink).where(
            sa.or_(LoginLink.expires_at <= now, LoginLink.used_at.is_not(None))
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=hash_token(token),
            role=role.value,
            employee_id=employee_id,
            api_token_id=api_token_id,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    return token


def session_from_api_token(session: Session, token: str, now: datetime) -> tuple[str, Role] | None:
    """Sign in with a pasted API token; integration tokens are for machines, not pages."""
    principal = authenticate(session, token.strip(), now)
    if principal is None or principal.role is Role.INTEGRATION:
        return None
    cookie = start_session(
        session,
        role=principal.role,
        employee_id=principal.employee_id,
        now=now,
        api_token_id=principal.token_id,
    )
    return cookie, principal.role


def end_session(session: Session, cookie: str) -> None:
    session.execute(sa.delete(WebSession).where(WebSession.token_hash == hash_token(cookie)))


def csrf_token(secret: bytes, cookie: str) -> str:
    """The form token that goes with a (pre)session cookie: derived, so nothing to store."""
    return hmac.new(secret, b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()


def find_user(session: Session, cookie: str, secret: bytes, now: datetime) -> WebUser | None:
    row = session.execute(
        sa.select(WebSession, Employee.email, ApiToken.revoked_at)
        .outerjoin(Employee, Employee.id == WebSession.employee_id)
        .outerjoin(ApiToken, ApiToken.id == WebSession.api_token_id)
        .where(WebSession.token_hash == hash_token(cookie), WebSession.expires_at > now)
    ).first()
    if row is None:
        return None
    web, email, revoked_at = row
    if revoked_at is not None:  # revoking the token ends the sessions it opened
        return None
    return WebUser(
        session_id=web.id,
        role=Role(web.role),
        employee_id=web.employee_id,
        email=email or f"{web.role} (token)",
        csrf=csrf_token(secret, cookie),
    )


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """HttpOnly always; Secure when served over https; SameSite=Lax for the session so that a
    link from elsewhere opens signed in, Strict for the pre-sign-in cookie."""
    response.set_cookie(
        name,
        value,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="lax" if name == SESSION_COOKIE else "strict",
    )


def secret_of(request: Request) -> bytes:
    secret: bytes = request.app.state.runtime.pipeline.secret
    return secret


def optional_user(request: Request) -> WebUser | None:
    """The signed-in user, looked up in a reading session of its own, so that checking who is
    asking never takes SQLite's write lock."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    with request.app.state.read_sessions() as session:
        return find_user(session, cookie, secret_of(request), datetime.now(UTC))


OptionalUser = Annotated[WebUser | None, Depends(optional_user)]


def signed_in(user: OptionalUser) -> WebUser:
    if user is None:
        raise HTTPException(status.HTTP_303_SEE_OTHER, "Sign in first.", {"Location": "/sign-in"})
    return user


UserDep = Annotated[WebUser, Depends(signed_in)]


def require(*roles: Role) -> Callable[[WebUser], WebUser]:
    """A dependency admitting signed-in users of these roles."""

    def check(user: UserDep) -> WebUser:
        if user.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "This page is not for your role.")
        return user

    return check


def _employee(user: UserDep) -> WebUser:
    if user.role is not Role.EMPLOYEE or user.employee_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This page is for employees.")
    return user


EmployeeUser = Annotated[WebUser, Depends(_employee)]
ComplianceUser = Annotated[WebUser, Depends(require(Role.COMPLIANCE, Role.ADMIN))]
AdminUser = Annotated[WebUser, Depends(require(Role.ADMIN))]


def _csrf_check(cookie_name: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency requiring, on every POST, the token derived from this one cookie."""

    async def check(request: Request) -> None:
        cookie = request.cookies.get(cookie_name)
        if cookie_name == SESSION_COOKIE and not cookie:
            # Signed out, or the cookie expired with its session: no token could match, and
            # what the person needs is to sign in again, as every page tells them.
            raise HTTPException(
                status.HTTP_303_SEE_OTHER, "Sign in first.", {"Location": "/sign-in"}
            )
        form = await request.form()
        sent = form.get(CSRF_FIELD)
        if not isinstance(sent, str) or not sent:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "The form's CSRF token is missing.")
        expected = csrf_token(secret_of(request), cookie) if cookie else ""
        if not expected or not hmac.compare_digest(sent, expected):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "The form's CSRF token is wrong.")

    return check


# Signed-in forms take only the session's token: the pre-sign-in cookie is one anyone can get a
# token for from /sign-in, so whoever could plant it in a browser could forge signed-in POSTs.
CsrfChecked = Depends(_csrf_check(SESSION_COOKIE))
# The sign-in forms themselves, posted before there is a session.
PresessionCsrfChecked = Depends(_csrf_check(PRESESSION_COOKIE))
