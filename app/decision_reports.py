"""Record: the decision log as compliance reads it: filtered, and counted per rule per day
and per employee, to show that the policy is applied to everyone alike."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.ledger import ACTION_CHANNEL
from app.models import DecisionRecord

NO_RULE = "(default)"  # a decision no rule or guardrail hit: the policy's default outcome


@dataclass(frozen=True)
class Filters:
    rule: str | None = None
    outcome: str | None = None
    employee_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def _where(query: sa.Select[Any], f: Filters) -> sa.Select[Any]:
    query = query.where(DecisionRecord.channel != ACTION_CHANNEL)
    if f.rule is not None:
        # `rules` is a JSON list of kebab-case ids: its text holds `"<id>"` exactly when hit.
        escaped = f.rule.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        text = sa.cast(DecisionRecord.rules, sa.Text)
        query = query.where(text.like(f'%"{escaped}"%', escape="\\"))
    if f.outcome is not None:
        query = query.where(DecisionRecord.outcome == f.outcome)
    if f.employee_id is not None:
        query = query.where(DecisionRecord.employee_id == f.employee_id)
    if f.since is not None:
        query = query.where(DecisionRecord.created_at >= f.since)
    if f.until is not None:
        query = query.where(DecisionRecord.created_at < f.until)
    return query


def decisions(
    session: Session, f: Filters, *, before: int | None, limit: int
) -> list[DecisionRecord]:
    """Decisions (not actions) matching the filters, newest first."""
    query = _where(sa.select(DecisionRecord), f).order_by(DecisionRecord.id.desc()).limit(limit)
    if before is not None:
        query = query.where(DecisionRecord.id < before)
    return list(session.scalars(query))


@dataclass(frozen=True)
class Aggregates:
    total: int
    by_rule_per_day: Counter[tuple[date, str, str]]  # (day, rule, outcome) -> decisions
    by_employee: Counter[tuple[int | None, str]]  # (employee, outcome) -> decisions


def aggregate(session: Session, f: Filters) -> Aggregates:
    """Counts over the matching decisions; a decision counts once for each rule it hit."""
    query = _where(
        sa.select(
            DecisionRecord.created_at,
            DecisionRecord.rules,
            DecisionRecord.outcome,
            DecisionRecord.employee_id,
        ),
        f,
    )
    total = 0
    per_rule: Counter[tuple[date, str, str]] = Counter()
    per_employee: Counter[tuple[int | None, str]] = Counter()
    for created_at, rules, outcome, employee_id in session.execute(
        query.execution_options(yield_per=5000)
    ):
        total += 1
        day = created_at.date()
        for rule in rules or [NO_RULE]:
            per_rule[(day, rule, outcome)] += 1
        per_employee[(employee_id, outcome)] += 1
    return Aggregates(total, per_rule, per_employee)
