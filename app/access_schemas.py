"""Serve: request and response shapes for tokens, review, settings, rights, decisions, webhooks.

Input models forbid unknown fields, so a request can never set what it may not (no mass
assignment); none of them is a table.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from app.schemas import Out, Printable, Text
from app.security import SCOPE, Role
from capture.parse import normalize_address
from policies.model import Visibility

Address = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"
    ),
    Printable,
]
Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    Printable,
]


def _as_stored(address: str) -> str:
    """The address as Mailroom stores and digests it (a Unicode domain in punycode)."""
    normalized = normalize_address(address)
    if normalized is None:
        raise ValueError("not a mailbox address (local-part@domain)")
    return normalized


# An address looked up or digested is normalized as capture normalizes what it stores: else
# `hans@bücher.example` would match nothing stored as `hans@xn--bcher-kva.example`.
Mailbox = Annotated[Address, AfterValidator(_as_stored)]

Scope = Annotated[str, StringConstraints(pattern=SCOPE, max_length=40)]
URL_LENGTH = 2000  # what webhook_subscriptions.url holds


def _fits(url: AnyHttpUrl) -> AnyHttpUrl:
    """Measured as stored: written out, a URL can grow (each non-ASCII letter is six)."""
    if len(str(url)) > URL_LENGTH:
        raise ValueError(f"a URL of at most {URL_LENGTH} characters, percent-encoded")
    return url


WebhookUrl = Annotated[AnyHttpUrl, AfterValidator(_fits)]
EventName = Literal[
    "message.captured", "contact.created", "contact.updated", "contact.erased", "decision.recorded"
]


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- tokens ---------------------------------------------------------------------------------


class TokenIn(In):
    role: Role
    employee_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    scopes: list[Scope] = Field(default_factory=list, max_length=20)
    label: Text = Field(default="", max_length=200)


class TokenOut(Out):
    id: int
    role: str
    employee_id: int | None
    scopes: list[str]
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="Shown only this once; only its hash is stored.")


# --- messages, contacts, review ---------------------------------------------------------------


class VisibilityIn(In):
    visibility: Visibility


class ContactPatchIn(In):
    name: Text = Field(max_length=200)


class ReviewItemOut(Out):
    id: int
    subject: str | None
    sent_at: datetime | None
    direction: str
    held_until: datetime | None
    participants: list[str]
    decision_id: int


# --- the employee's own settings --------------------------------------------------------------


class SettingsOut(Out):
    capture_paused: bool
    private_tags: list[str]


class SettingsIn(In):
    capture_paused: bool | None = None
    private_tags: list[Tag] | None = Field(default=None, max_length=50)


class PersonalContactIn(In):
    address: Mailbox


class PersonalContactOut(Out):
    """Only a keyed digest of the address is kept, so the address is never returned."""

    id: int
    created_at: datetime


# --- data-subject rights ----------------------------------------------------------------------


class AddressIn(In):
    address: Mailbox


class ReceiptOut(Out):
    """Proof that a request was carried out: the log record that says so, content-free."""

    action: str
    ledger_record: int
    ledger_hash: str
    at: datetime
    contact_found: bool
    messages_removed: int = 0
    participations_removed: int = 0
    held_removed: int = 0
    suppressed: bool
    wal_truncated: bool | None = Field(
        default=None,
        description="SQLite: whether its write-ahead log, which still held the removed rows, was "
        "truncated (false: another connection was reading; the retention job retries every "
        "10 minutes). Null on PostgreSQL.",
    )


class ExportOut(Out):
    contact: dict[str, Any]
    history: list[dict[str, Any]]
    company: dict[str, Any] | None
    relationships: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    objected: bool
    note: str
    exported_at: datetime


# --- decisions --------------------------------------------------------------------------------


class DecisionOut(Out):
    id: int
    created_at: datetime
    channel: str
    employee_id: int | None
    outcome: str
    rules: list[str]
    policy_sha256: str


class RuleDayCount(Out):
    day: date
    rule: str
    outcome: str
    count: int


class EmployeeCount(Out):
    employee_id: int | None
    outcome: str
    count: int


class AggregatesOut(Out):
    since: datetime
    until: datetime
    decisions: int
    by_rule_per_day: list[RuleDayCount]
    by_employee: list[EmployeeCount]


# --- webhooks ---------------------------------------------------------------------------------


class WebhookIn(In):
    url: WebhookUrl
    events: list[EventName] = Field(min_length=1, max_length=5)


class WebhookPatchIn(In):
    active: bool


class WebhookOut(Out):
    id: int
    url: str
    events: list[str]
    active: bool
    consecutive_failures: int
    disabled_at: datetime | None
    created_at: datetime


class NewWebhookOut(WebhookOut):
    secret: str = Field(description="Signs every delivery; shown only this once.")


class AttemptOut(Out):
    attempted_at: datetime
    status_code: int | None
    error: str


class DeliveryOut(Out):
    id: int
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None
    log: list[AttemptOut]


# --- employees (admins) -----------------------------------------------------------------------


class EmployeeIn(In):
    email: Address
    name: Text = Field(default="", max_length=200)
    aliases: list[Address] = Field(default_factory=list, max_length=20)


class EmployeeOut(Out):
    id: int
    email: str
    name: str
    aliases: list[str]
    created_at: datetime
