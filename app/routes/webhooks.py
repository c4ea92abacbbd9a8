"""Serve: /api/v1/webhooks, an integration's subscriptions and their delivery log."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request, Response, status

from app import webhook_targets, webhooks
from app.access_schemas import (
    AttemptOut,
    DeliveryOut,
    NewWebhookOut,
    WebhookIn,
    WebhookOut,
    WebhookPatchIn,
)
from app.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from app.routes.deps import SessionDep, WebhookWriterDep
from app.routes.pagination import Cursor, Id, Limit, decode_cursor, encode_cursor
from app.schemas import Page
from app.security import Principal

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
# Each event is queued for every subscription in the transaction of the message causing it.
MAX_SUBSCRIPTIONS = 20  # a token's


def _own(session: SessionDep, principal: Principal, webhook_id: Id) -> WebhookSubscription:
    found = session.get(WebhookSubscription, webhook_id)
    if found is None or found.token_id != principal.token_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such webhook.")
    return found


@router.post("", response_model=NewWebhookOut, status_code=status.HTTP_201_CREATED)
def create_webhook(
    request: Request, session: SessionDep, principal: WebhookWriterDep, body: WebhookIn
) -> NewWebhookOut:
    """Subscribe a URL to events. Each event needs the scope that reads its subject
    (`messages:read`, `contacts:read`, `decisions:read`); payloads carry only ids. The URL's
    host must resolve to public addresses only (or to networks the operator allows). A token
    has at most 20 subscriptions."""
    held = session.scalar(
        sa.select(sa.func.count())
        .select_from(WebhookSubscription)
        .where(WebhookSubscription.token_id == principal.token_id)
    )
    if held is not None and held >= MAX_SUBSCRIPTIONS:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"This token has {MAX_SUBSCRIPTIONS} subscriptions already; delete one first.",
        )
    events = sorted(set(body.events))
    missing = webhooks.missing_scopes(list(events), principal.scopes)
    if missing:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"This token lacks the scopes {', '.join(missing)}."
        )
    allowed = request.app.state.runtime.settings.webhook_allow_networks
    if not webhook_targets.may_send_to(str(body.url), allowed):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, webhook_targets.REFUSED)
    row = WebhookSubscription(
        token_id=principal.token_id, url=str(body.url), secret=webhooks.new_secret(), events=events
    )
    session.add(row)
    session.flush()
    return NewWebhookOut(**WebhookOut.model_validate(row).model_dump(), secret=row.secret)


@router.get("", response_model=list[WebhookOut])
def list_webhooks(session: SessionDep, principal: WebhookWriterDep) -> list[WebhookOut]:
    rows = session.scalars(
        sa.select(WebhookSubscription)
        .where(WebhookSubscription.token_id == principal.token_id)
        .order_by(WebhookSubscription.id.desc())
        .limit(100)
    )
    return [WebhookOut.model_validate(r) for r in rows]


@router.get("/{webhook_id}", response_model=WebhookOut)
def get_webhook(session: SessionDep, principal: WebhookWriterDep, webhook_id: Id) -> WebhookOut:
    return WebhookOut.model_validate(_own(session, principal, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut)
def patch_webhook(
    session: SessionDep, principal: WebhookWriterDep, webhook_id: Id, body: WebhookPatchIn
) -> WebhookOut:
    """Re-enable a subscription disabled after failures (or pause one)."""
    row = _own(session, principal, webhook_id)
    row.active = body.active
    if body.active:
        row.consecutive_failures, row.disabled_at = 0, None
    session.flush()
    return WebhookOut.model_validate(row)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(session: SessionDep, principal: WebhookWriterDep, webhook_id: Id) -> Response:
    session.delete(_own(session, principal, webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut])
def list_deliveries(
    session: SessionDep,
    principal: WebhookWriterDep,
    webhook_id: Id,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DeliveryOut]:
    """The delivery log, newest first: status, attempts, and each attempt's answer."""
    _own(session, principal, webhook_id)
    query = (
        sa.select(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == webhook_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    deliveries = list(session.scalars(query))
    attempts: dict[int, list[AttemptOut]] = {d.id: [] for d in deliveries}
    for attempt in session.scalars(
        sa.select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(list(attempts)))
        .order_by(WebhookAttempt.id)
    ):
        attempts[attempt.delivery_id].append(AttemptOut.model_validate(attempt))
    items = [
        DeliveryOut(
            id=d.id,
            event=d.event,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
            log=attempts[d.id],
        )
        for d in deliveries
    ]
    return Page(items=items, next_cursor=encode_cursor([d.id for d in items], limit))
