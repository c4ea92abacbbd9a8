"""Serve: the API's request and response shapes; never the tables themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


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
    company: CompanyOut | None
    created_at: datetime
    updated_at: datetime


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
    participants: list[ParticipantOut]
    contacts: list[ContactOut]
    owners: list[OwnerOut]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
