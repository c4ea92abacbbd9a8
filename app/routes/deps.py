"""Serve: request-scoped dependencies: the database session and the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from app.request_limits import RateLimiter, retry_after
from app.security import Principal, Role, authenticate, touch_token

bearer = HTTPBearer(auto_error=False, description="A token from `mailroom tokens create`.")


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed if the route returns, rolled back if it raises.

    GET and HEAD read without taking SQLite's write lock, so they never hold up the listener.
    """
    reading = request.method in ("GET", "HEAD")
    state = request.app.state
    sessions: sessionmaker[Session] = state.read_sessions if reading else state.sessions
    with sessions() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# Committed before the response is sent: a 2xx means the change is durable and visible.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "A bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = authenticate(session, credentials.credentials, datetime.now(UTC))
    if principal is not None and principal.stale_use:
        if request.method in ("GET", "HEAD"):  # a reading session must not write
            touch_token(request.app.state.sessions, principal.token_id, datetime.now(UTC))
        else:
            touch_token(session, principal.token_id, datetime.now(UTC))
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "The token is unknown or revoked.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    wait = limiter.acquire(principal.token_id) if limiter is not None else None
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many requests with this token; slow down.",
            headers={"Retry-After": retry_after(wait)},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def allow(*roles: Role, scope: str | None = None) -> Callable[[Principal], Principal]:
    """A dependency admitting the given roles, and integrations holding `scope`."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.role in roles:
            return principal
        if scope and principal.role is Role.INTEGRATION and scope in principal.scopes:
            return principal
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This token's role may not do this.")

    return check


def scope(name: str) -> Callable[[Principal], Principal]:
    """A dependency admitting only integration tokens that hold this scope."""
    return allow(scope=name)


# One alias per role: a route says who it is for in its signature.
EmployeeDep = Annotated[Principal, Depends(allow(Role.EMPLOYEE))]
ComplianceDep = Annotated[Principal, Depends(allow(Role.COMPLIANCE))]
AdminDep = Annotated[Principal, Depends(allow(Role.ADMIN))]
AuditorDep = Annotated[Principal, Depends(allow(Role.COMPLIANCE, Role.ADMIN))]
WebhookWriterDep = Annotated[Principal, Depends(scope("webhooks:write"))]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"The body exceeds {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"The body exceeds {limit} bytes."
            )
        chunks.append(chunk)
    return b"".join(chunks)
