"""Serve: the API's shapes for mailboxes; a password never has a field here."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from app.schemas import Out, Text


class MailboxIn(BaseModel):
    """A mailbox to add; `employee` null (with `journal` true) for a journal mailbox."""

    model_config = ConfigDict(extra="forbid")

    employee: Text | None = None
    journal: bool = False
    host: Text = Field(min_length=1, max_length=253)
    port: int = Field(default=993, ge=1, le=65535)
    username: Text = Field(min_length=1, max_length=320)
    password: SecretStr
    folders: list[Text] = Field(default=["INBOX", "Sent"], min_length=1, max_length=50)
    tls: Literal["tls", "starttls", "none"] = "tls"
    since: date | None = None


class MailboxPatch(BaseModel):
    """What an admin may change on a mailbox: whether it is synced, and its password (sealed
    for the same server and user, so where each folder stands is kept). Its server, user,
    TLS mode and employee are fixed: remove it and add it again."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    password: SecretStr | None = None


class FolderOut(Out):
    name: str
    last_uid: int
    updated_at: datetime


class MailboxOut(Out):
    id: int
    employee: str | None  # None for a journal mailbox
    host: str
    port: int
    username: str
    tls: str
    journal: bool
    folders: list[str]
    enabled: bool
    last_sync_at: datetime | None
    lag_seconds: float | None  # since the last complete sync; None before the first
    pending: int  # messages on the server not yet synced (the backfill still to do)
    synced: int
    bodies_fetched: int
    bodies_skipped: int  # decided on headers alone; their bodies never left the server
    last_error: str | None
    last_error_at: datetime | None
    folder_state: list[FolderOut]


class MailboxList(Out):
    items: list[MailboxOut]
