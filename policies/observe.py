"""Decide, step one: reduce a parsed message to content-free facts that predicates read."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capture.parse import ParsedMessage
from policies.model import Channel

BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post", "list-help")
# Headers that bulk-mail services (ESPs) stamp on every campaign message.
ESP_HEADERS = (
    "x-campaign",
    "x-campaignid",
    "x-mailchimp-campaign",
    "x-mc-user",
    "x-sg-eid",
    "x-sendgrid-eid",
    "x-mailgun-tag",
    "feedback-id",
    "x-ses-outgoing",
    "x-marketoid",
    "x-hubspot-campaign",
    "x-ms-exchange-organization-bulk",
)


@dataclass(frozen=True)
class Submitter:
    """The employee a message was captured for, as the engine needs to know them."""

    employee_id: int
    addresses: frozenset[str]
    capture_paused: bool = False


@dataclass(frozen=True)
class Context:
    """What is known besides the message itself; loaded by the pipeline, passed in whole."""

    channel: Channel
    org_domains: frozenset[str]
    submitter: Submitter | None
    known_contacts: frozenset[str]
    now: datetime
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Observations:
    """Facts (persisted in the decision log: never an address, subject or text) and notes
    (shown by explain, never persisted)."""

    facts: dict[str, Any]
    notes: dict[str, tuple[str, ...]]


def domain_token(secret: bytes, domain: str) -> str:
    """A keyed digest of a domain, so that the log can match domain lists without naming them."""
    return hmac.new(secret, b"domain:" + domain.lower().encode(), hashlib.sha256).hexdigest()[:32]


def is_internal(address: str, org_domains: frozenset[str]) -> bool:
    domain = address.rpartition("@")[2]
    return any(domain == org or domain.endswith("." + org) for org in org_domains)


def observe(message: ParsedMessage, context: Context) -> Observations:
    participants = [a.address for a in message.participants]
    external = [a for a in participants if not is_internal(a, context.org_domains)]
    external_domains = sorted({a.rpartition("@")[2] for a in external})
    list_headers = [h for h in LIST_HEADERS if message.header(h) is not None]
    esp_headers = [h for h in ESP_HEADERS if message.header(h) is not None]
    precedence = (message.header("precedence") or "").strip().lower()
    facts: dict[str, Any] = {
        "channel": context.channel.value,
        "submitter_known": context.submitter is not None,
        "capture_paused": bool(context.submitter and context.submitter.capture_paused),
        "participants": len(participants),
        "external_participants": len(external),
        "external_domains": len(external_domains),
        "external_domain_tokens": [domain_token(context.secret, d) for d in external_domains],
        "known_contacts": sum(1 for a in external if a in context.known_contacts),
        "list_headers": list_headers,
        "esp_headers": esp_headers,
        "precedence_bulk": precedence in BULK_PRECEDENCE,
        "size": message.size,
        "defects": len(message.defects),
    }
    notes = {
        "external_domains": tuple(external_domains),
        "precedence": (precedence,) if precedence else (),
    }
    return Observations(facts=facts, notes=notes)
