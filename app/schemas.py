"""Serve: the API's request and response shapes; never the tables themselves."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

T = TypeVar("T")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def without_control_characters(value: str) -> str:
    """No text the API takes holds NUL, a line break or another control character: none
    belongs in a name, address, label or search, and PostgreSQL cannot store NUL at all."""
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("control characters (NUL, tab, line breaks...) are not allowed here")
    return value


# Every string the API reads, from a body or the query, is Text or ends with Printable.
Printable = AfterValidator(without_control_characters)
Text = Annotated[str, Printable]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None


class CompanyOut(Out):
    id: int
    domain: str
    name: str
    created_at: datetime


class ContactOut(Out):
    id: int
    address: str
    name: str
    first_name: str = ""
    last_name: str = ""
    title: str = ""
    phone: str = ""
    organization: str = ""  # as the contact's newest signature names it
    undeliverable_since: datetime | None = None
    merged_into_id: int | None = None
    company: CompanyOut | None
    created_at: datetime
    updated_at: datetime


class CompanyWithContactsOut(CompanyOut):
    contact_count: int
    contacts: list[ContactOut]  # the newest 100; all of them: /contacts?company_id=


class ParticipantOut(Out):
    role: str
    address: str
    name: str
    contact_id: int | None
    employee_id: int | None


class OwnerOut(Out):
    employee_id: int
    email: str
    channel: str
    captured_at: datetime


class MessageOut(Out):
    id: int
    message_id: str | None
    subject: str | None
    body_text: str | None
    sent_at: datetime | None
    direction: str
    outcome: str
    visibility: str
    decision_id: int
    created_at: datetime
    thread_id: int | None = None
    participants: list[ParticipantOut]
    contacts: list[ContactOut]
    owners: list[OwnerOut]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None


class ContactChangeOut(Out):
    field: str
    old_value: str
    new_value: str
    message_id: int | None
    observed_at: datetime


class RelationshipOut(Out):
    """Who knows whom: an employee and a contact, with their exchange and its strength."""

    employee_id: int
    employee_email: str
    employee_name: str
    contact: ContactOut
    sent_count: int
    received_count: int
    first_seen: datetime
    last_seen: datetime
    strength: int  # 0-100; see README "Relationship strength"


class ThreadOut(Out):
    id: int
    created_at: datetime
    last_message_at: datetime
    messages: list[MessageOut]  # those the caller may see, oldest first


class DuplicateOut(Out):
    """Two contacts that look like one person: `same-person` (one name, one company) or
    `likely-job-move` (one name, a new company domain)."""

    reason: str
    contacts: list[ContactOut]


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: int = Field(ge=1, le=2**31 - 1, description="The contact to merge into.")
