"""Record: content-free events for integrations: an outbox written with the event, delivered
signed, retried with exponential backoff, and logged attempt by attempt."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app import crm, webhook_targets
from app.models import (
    ApiToken,
    Contact,
    Message,
    Participant,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from app.prepared import Prepared

log = logging.getLogger("mailroom.webhooks")

# Each event is sent only to subscriptions whose token holds the scope that reads its subject.
EVENT_SCOPES = {
    "message.captured": "messages:read",
    "contact.created": "contacts:read",
    "contact.updated": "contacts:read",
    "contact.erased": "contacts:read",
    "decision.recorded": "decisions:read",
}
REFUSED_ADDRESS = "refused: the host does not resolve to public addresses only"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a public prefix, not a secret
_SUBSCRIBERS_KEY = "mailroom.webhooks.subscribers"  # conn.info: (transaction, by event)
_ACTIVE = Prepared(  # once per transaction on the hot path; a revoked token's are never sent
    sa.select(WebhookSubscription.id, WebhookSubscription.events)
    .join(ApiToken, ApiToken.id == WebhookSubscription.token_id)
    .where(WebhookSubscription.active.is_(True), ApiToken.revoked_at.is_(None))
)
# Queued also for a subscription that is not active (disabled after failures, or paused),
# and sent once it is active again: an erasure must reach every integration that may hold the
# person, even one whose receiver was down when it was made. Erasures are few: the outbox of
# a subscription disabled for good does not grow with the mail.
QUEUED_WHILE_INACTIVE = frozenset({"contact.erased"})
_UNREVOKED = Prepared(
    sa.select(WebhookSubscription.id, WebhookSubscription.events)
    .join(ApiToken, ApiToken.id == WebhookSubscription.token_id)
    .where(ApiToken.revoked_at.is_(None))
)
_QUEUE = sa.insert(WebhookDelivery)
_NEW_CONTACTS = (
    sa.select(Contact.id)
    .join(Participant, Participant.contact_id == Contact.id)
    .where(
        Participant.message_id == sa.bindparam("message"), Contact.created_at == sa.bindparam("now")
    )
    .distinct()
)
# message.captured goes only where GET /messages/{id} would answer an integration.
_SHOWN_TO_INTEGRATIONS = sa.select(Message.id).where(
    Message.id == sa.bindparam("message"), crm.shared_capture()
)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def missing_scopes(events: list[str], scopes: frozenset[str]) -> list[str]:
    """The scopes a token lacks for these events (empty when it may subscribe to all)."""
    return sorted({EVENT_SCOPES[e] for e in events} - scopes)


def _conn(db: Session | sa.Connection) -> sa.Connection:
    return db.connection() if isinstance(db, Session) else db


def _subscribers(conn: sa.Connection) -> dict[str, list[int]]:
    """Active subscriptions by event, read once per transaction (a group commit's batch)."""
    transaction = conn.get_transaction()
    known = conn.info.get(_SUBSCRIBERS_KEY)
    if transaction is not None and known is not None and known[0] is transaction:
        return known[1]  # type: ignore[no-any-return]
    found: dict[str, list[int]] = defaultdict(list)
    for sub_id, events in _ACTIVE.rows(conn):
        for event in events:
            found[event].append(sub_id)
    conn.info[_SUBSCRIBERS_KEY] = (transaction, found)
    return found


def _queue(
    conn: sa.Connection, subscriptions: list[int], event: str, data: dict[str, Any], now: datetime
) -> None:
    if subscriptions:
        conn.execute(
            _QUEUE,
            [
                {
                    "subscription_id": sub,
                    "event": event,
                    "payload": data,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for sub in subscriptions
            ],
        )


def emit(db: Session | sa.Connection, event: str, data: dict[str, Any], now: datetime) -> None:
    """Queue one content-free event for its subscribers, in the caller's transaction."""
    assert event in EVENT_SCOPES, event
    conn = _conn(db)
    if event in QUEUED_WHILE_INACTIVE:
        subscribers = [sub for sub, events in _UNREVOKED.rows(conn) if event in events]
    else:
        subscribers = _subscribers(conn).get(event, [])
    _queue(conn, subscribers, event, data, now)


def on_decision(
    conn: sa.Connection,
    *,
    decision_id: int,
    outcome: str,
    channel: str,
    employee_id: int | None,
    message_id: int | None,
    now: datetime,
) -> None:
    """The pipeline's events for one message: the decision, and a capture with its new
    contacts when the message was kept. One query when nobody subscribes."""
    subscribers = _subscribers(conn)
    if not subscribers:
        return
    decided = {"decision_id": decision_id, "outcome": outcome, "channel": channel}
    _queue(conn, subscribers.get("decision.recorded", []), "decision.recorded", decided, now)
    if message_id is None or outcome not in ("capture", "metadata_only"):
        return
    captured(
        conn,
        message_id=message_id,
        employee_id=employee_id,
        channel=channel,
        now=now,
        subscribers=subscribers,
    )


def captured(
    db: Session | sa.Connection,
    *,
    message_id: int,
    employee_id: int | None,
    channel: str,
    now: datetime,
    subscribers: dict[str, list[int]] | None = None,
) -> None:
    """message.captured when integrations may read the message, and contact.created for each
    contact this message brought in."""
    conn = _conn(db)
    if subscribers is None:
        subscribers = _subscribers(conn)
    readers = subscribers.get("message.captured", [])
    if readers and conn.scalar(_SHOWN_TO_INTEGRATIONS, {"message": message_id}) is not None:
        data = {"message_id": message_id, "employee_id": employee_id, "channel": channel}
        _queue(conn, readers, "message.captured", data, now)
    if subscribers.get("contact.created", []):
        for contact_id in conn.scalars(_NEW_CONTACTS, {"message": message_id, "now": now}):
            _queue(
                conn,
                subscribers.get("contact.created", []),
                "contact.created",
                {"contact_id": contact_id},
                now,
            )


# --- delivery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8  # then the delivery is given up ("failed")
    base_delay: float = 10.0  # seconds before the second attempt; doubled for each next one
    max_delay: float = 3600.0
    disable_after: int = 20  # consecutive failed attempts before a subscription is disabled
    timeout: float = 10.0  # seconds a delivery may take in all, answer included
    batch: int = 50
    # Networks webhooks may reach besides public ones (MAILROOM_WEBHOOK_ALLOW_NETWORKS)
    allowed_networks: tuple[webhook_targets.Network, ...] = ()

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.base_delay * 2 ** (attempts - 1), self.max_delay))


@dataclass(frozen=True)
class _Due:
    id: int
    subscription_id: int
    url: str
    secret: str
    event: str
    payload: dict[str, Any]
    created_at: datetime


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=` and the HMAC-SHA256 of "<timestamp>.<body>" under the subscription's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def deliver_due(
    sessions: sessionmaker[Session],
    client: httpx.Client,
    now: datetime,
    policy: DeliveryPolicy = DeliveryPolicy(),
) -> int:
    """Send every delivery that is due (up to a batch), recording each attempt. The client
    is `webhook_targets.client`, which connects only where webhooks may go."""
    with sessions() as session, session.begin():
        due = [_Due(*row) for row in session.execute(_due(now).limit(policy.batch))]
    for item in due:
        # The last of a batch goes minutes after it was read, at worst: its subscription may
        # have been deleted or paused by then, or its token revoked.
        with sessions() as session:
            if session.scalar(_due(now).where(WebhookDelivery.id == item.id)) is None:
                continue
        code, error = _post(client, item, policy.timeout)
        with sessions() as session, session.begin():
            _record(session, item, code, error, now, policy)
    return len(due)


def _due(now: datetime) -> sa.Select[tuple[int, int, str, str, str, dict[str, Any], datetime]]:
    """Deliveries due by `now`, oldest first, of active subscriptions with unrevoked tokens."""
    return (
        sa.select(
            WebhookDelivery.id,
            WebhookDelivery.subscription_id,
            WebhookSubscription.url,
            WebhookSubscription.secret,
            WebhookDelivery.event,
            WebhookDelivery.payload,
            WebhookDelivery.created_at,
        )
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .join(ApiToken, ApiToken.id == WebhookSubscription.token_id)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            WebhookSubscription.active.is_(True),
            ApiToken.revoked_at.is_(None),
        )
        .order_by(WebhookDelivery.id)
    )


def _post(client: httpx.Client, item: _Due, timeout: float) -> tuple[int | None, str]:
    body = json.dumps(
        {
            "id": item.id,
            "type": item.event,
            "created_at": item.created_at.isoformat(),
            "data": item.payload,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    timestamp = str(int(time.time()))  # the moment of sending, which receivers check
    headers = {
        "Content-Type": "application/json",
        "Mailroom-Event": item.event,
        "Mailroom-Delivery": str(item.id),
        "Mailroom-Timestamp": timestamp,
        "Mailroom-Signature": sign(item.secret, timestamp, body),
    }
    try:
        # Only the status counts: the body is never read, so no receiver can hold the
        # delivery (and the deliveries behind it) by answering on and on, or fill memory.
        with (
            webhook_targets.deadline(timeout),
            client.stream(
                "POST", item.url, content=body, headers=headers, timeout=timeout
            ) as response,
        ):
            code = response.status_code
    except webhook_targets.RefusedAddressError:  # it may resolve elsewhere since it subscribed
        return None, REFUSED_ADDRESS
    except httpx.HTTPError as error:
        return None, type(error).__name__
    return code, "" if response.is_success else f"HTTP {code}"


def _record(
    session: Session,
    item: _Due,
    code: int | None,
    error: str,
    now: datetime,
    policy: DeliveryPolicy,
) -> None:
    # Locked (on PostgreSQL): a deletion now waits for this attempt's record, not the reverse.
    delivery = session.get(WebhookDelivery, item.id, with_for_update=True)
    subscription = session.get(WebhookSubscription, item.subscription_id)
    if delivery is None or subscription is None:  # deleted meanwhile, with its log
        return
    session.add(
        WebhookAttempt(delivery_id=item.id, attempted_at=now, status_code=code, error=error)
    )
    delivery.attempts += 1
    if not error:
        delivery.status, delivery.delivered_at = "delivered", now
        subscription.consecutive_failures = 0
        return
    if delivery.attempts >= policy.max_attempts:
        delivery.status = "failed"
    else:
        delivery.next_attempt_at = now + policy.delay(delivery.attempts)
    subscription.consecutive_failures += 1
    if subscription.active and subscription.consecutive_failures >= policy.disable_after:
        subscription.active, subscription.disabled_at = False, now
        log.warning("webhook subscription %d disabled after repeated failures", subscription.id)


class Deliverer:
    """The webhook-delivery job's work (app/jobs.py runs it in one process at a time): each run
    sends what is due, over one HTTP client kept between runs."""

    def __init__(
        self, sessions: sessionmaker[Session], policy: DeliveryPolicy = DeliveryPolicy()
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.client = webhook_targets.client(policy.allowed_networks)

    def run(self) -> int:
        return deliver_due(self.sessions, self.client, datetime.now(UTC), self.policy)

    def close(self) -> None:
        self.client.close()
