"""Serve: /api/v1/tokens, issuing and revoking API tokens (admins; anyone revokes their own)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Response, status

from app.access_schemas import NewTokenOut, TokenIn, TokenOut
from app.models import ApiToken, Employee
from app.routes.deps import AdminDep, PrincipalDep, SessionDep
from app.routes.pagination import Cursor, Id, Limit, decode_cursor, encode_cursor
from app.schemas import Page
from app.security import (
    ISSUED_ON_THE_SERVER,
    Role,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
)

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("", response_model=Page[TokenOut])
def get_tokens(
    session: SessionDep, _admin: AdminDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[TokenOut]:
    """Every token with its role, scopes and last use; never the token itself."""
    rows = list_tokens(session, before=decode_cursor(cursor), limit=limit)
    items = [TokenOut.model_validate(r) for r in rows]
    return Page(items=items, next_cursor=encode_cursor([t.id for t in items], limit))


@router.post("", response_model=NewTokenOut, status_code=status.HTTP_201_CREATED)
def post_token(session: SessionDep, _admin: AdminDep, body: TokenIn) -> NewTokenOut:
    """Issue a token; the response is the only place it is ever shown. Not an employee's:
    admins never see message content, and an employee token would show them someone's."""
    if body.role is Role.EMPLOYEE:
        raise HTTPException(status.HTTP_403_FORBIDDEN, ISSUED_ON_THE_SERVER)
    if body.employee_id is not None and session.get(Employee, body.employee_id) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "No such employee.")
    if body.role is not Role.INTEGRATION and body.scopes:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Only integrations have scopes.")
    try:
        token = create_token(
            session,
            role=body.role,
            employee_id=body.employee_id,
            scopes=tuple(body.scopes),
            label=body.label,
        )
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    session.flush()
    row = session.scalars(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one()
    return NewTokenOut(**TokenOut.model_validate(row).model_dump(), token=token)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(session: SessionDep, principal: PrincipalDep, token_id: Id) -> Response:
    """Revoke a token at once: admins any, everyone else only the one they present."""
    if principal.role is not Role.ADMIN and token_id != principal.token_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such token.")
    if revoke_token(session, token_id, datetime.now(UTC)) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such token.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
