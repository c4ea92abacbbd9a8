"""Serve: API shapes for the published policy, its versions, the ledger check and explain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class GuardrailOut(BaseModel):
    id: str
    description: str
    outcome: str


class PolicyOut(BaseModel):
    sha256: str
    version: str
    version_id: int | None
    policy: dict[str, Any]
    guardrails: list[GuardrailOut]


class VersionOut(BaseModel):
    id: int
    sha256: str
    name: str
    version: str
    created_at: datetime
    activated_at: datetime | None
    active: bool


class VersionSourceOut(VersionOut):
    source: str


class RuleChangeOut(BaseModel):
    id: str
    fields: list[str]


class DiffOut(BaseModel):
    from_id: int
    to_id: int
    added: list[str]
    removed: list[str]
    changed: list[RuleChangeOut]
    reordered: bool
    unified: str


class VerificationOut(BaseModel):
    ok: bool
    checked: int
    first_broken: int | None
    problem: str | None
    head_id: int | None = None  # note these two outside Mailroom; pass them back as the anchor
    head_hash: str | None = None


class VerdictOut(BaseModel):
    id: str
    hit: bool
    reason: str
    evidence: list[str]


class ExplanationOut(BaseModel):
    outcome: str
    deciding_rule: str | None
    rules: list[str]
    policy: str
    verdicts: list[VerdictOut]
    facts: dict[str, Any]
    contacts: list[str]
