"""Serve: /api/v1/review, the messages the policy held for the employee to decide."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from app import review
from app.access_schemas import ReviewItemOut
from app.db import scrub_wal
from app.models import Message
from app.routes.deps import EmployeeDep, SessionDep
from app.routes.pagination import Cursor, Id, Limit, decode_cursor, encode_cursor
from app.schemas import Page
from app.security import Principal

router = APIRouter(prefix="/review", tags=["review"])


@router.get("", response_model=Page[ReviewItemOut])
def get_queue(
    session: SessionDep, principal: EmployeeDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[ReviewItemOut]:
    """Your held messages, newest first; each is removed at `held_until` unless you decide."""
    assert principal.employee_id is not None
    rows = review.queue(session, principal.employee_id, before=decode_cursor(cursor), limit=limit)
    items = [
        ReviewItemOut(
            id=held.message.id,
            subject=held.message.subject,
            sent_at=held.message.sent_at,
            direction=held.message.direction,
            held_until=held.held_until,
            participants=addresses,
            decision_id=held.decision_id,  # theirs, not a colleague's of the same mail
        )
        for held, addresses in rows
    ]
    return Page(items=items, next_cursor=encode_cursor([i.id for i in items], limit))


def _reviewer(request: Request, principal: Principal) -> review.Reviewer:
    assert principal.employee_id is not None
    return review.reviewer(request.app.state.runtime, principal.employee_id)


def _held(session: SessionDep, principal: Principal, message_id: Id) -> Message:
    assert principal.employee_id is not None
    found = review.find_held(session, principal.employee_id, message_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such message in your review queue.")
    return found


@router.post(
    "/{message_id}/capture",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "A guardrail forbids capturing it now"}},
)
def post_capture(
    request: Request, session: SessionDep, principal: EmployeeDep, message_id: Id
) -> Response:
    """Keep a held message: it is filed like a captured one, with the policy's visibility,
    or private (its owners only) if a colleague filed the same mail too."""
    message = _held(session, principal, message_id)
    try:
        review.capture(session, message, _reviewer(request, principal))
    except review.BlockedError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{message_id}/discard", status_code=status.HTTP_204_NO_CONTENT)
def post_discard(
    request: Request, session: SessionDep, principal: EmployeeDep, message_id: Id
) -> Response:
    """Let a held message go now; only a content-free record of the choice remains."""
    review.discard(session, _held(session, principal, message_id), _reviewer(request, principal))
    session.commit()
    scrub_wal(request.app.state.runtime.db)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
