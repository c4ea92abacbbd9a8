"""Serve: API tokens (stored only as hashes) and the principal a request acts as."""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import ApiToken, Employee

LAST_USED_GRANULARITY = timedelta(minutes=1)
TOKEN_PREFIX = "mr_"  # noqa: S105 - a public prefix that makes leaked tokens greppable
SCOPE = r"^[a-z]+:[a-z]+$"  # an integration's scope: contacts:read, webhooks:write


class Role(enum.StrEnum):
    ADMIN = "admin"
    COMPLIANCE = "compliance"
    EMPLOYEE = "employee"
    INTEGRATION = "integration"


@dataclass(frozen=True)
class Principal:
    token_id: int
    role: Role
    employee_id: int | None
    scopes: frozenset[str]
    stale_use: bool = False  # last_used_at is old enough to be worth writing again


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ISSUED_ON_THE_SERVER = (
    "Employee tokens are issued on the server (`mailroom tokens create --role employee`, "
    "`mailroom login-link`), not by admins: whoever holds one reads that employee's mail."
)


def create_token(
    session: Session,
    *,
    role: Role,
    employee_id: int | None,
    scopes: tuple[str, ...] = (),
    label: str = "",
) -> str:
    """Issue a token; only its hash is stored, so this is the one time it can be shown."""
    if role is Role.EMPLOYEE and employee_id is None:
        raise ValueError("an employee token belongs to an employee")
    if role is not Role.EMPLOYEE and employee_id is not None:
        # Whoever holds it would be that employee for every rule that asks "is it theirs?"
        raise ValueError(f"a {role.value} token belongs to no employee")
    if scopes and role is not Role.INTEGRATION:
        raise ValueError("only integrations have scopes")  # no other role reads them
    unlike = [scope for scope in scopes if not re.fullmatch(SCOPE, scope) or len(scope) > 40]
    if unlike:
        raise ValueError(f"{unlike[0]!r} is no scope: a scope is written like contacts:read")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            token_hash=hash_token(token),
            role=role.value,
            employee_id=employee_id,
            scopes=sorted(scopes),
            label=label,
        )
    )
    return token


def authenticate(session: Session, token: str, now: datetime) -> Principal | None:
    """The principal for a presented token, or None if unknown or revoked."""
    row = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.employee_id is not None and session.get(Employee, row.employee_id) is None:
        return None
    stale = row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY
    return Principal(row.id, Role(row.role), row.employee_id, frozenset(row.scopes), stale)


def touch_token(target: Session | sessionmaker[Session], token_id: int, now: datetime) -> None:
    """Record a token's use (at most once a minute per token): in the given session, or in a
    short write of its own when given a session factory."""
    update = sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
    if isinstance(target, Session):
        target.execute(update)
        return
    with target() as session, session.begin():
        session.execute(update)


def revoke_token(session: Session, token_id: int, now: datetime) -> ApiToken | None:
    """Revoke a token at once (idempotent); None if there is no such token."""
    row = session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        session.flush()
    return row


def list_tokens(session: Session, *, before: int | None, limit: int) -> list[ApiToken]:
    """Every token, newest first: role, scopes, label and times, never a secret."""
    query = sa.select(ApiToken).order_by(ApiToken.id.desc()).limit(limit)
    if before is not None:
        query = query.where(ApiToken.id < before)
    return list(session.scalars(query))
