"""Serve: /api/v1/decisions, the content-free decision log: compliance reads all of it,
an employee their own decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from app import decision_reports, ledger
from app.access_schemas import AggregatesOut, DecisionOut, EmployeeCount, RuleDayCount
from app.policy_schemas import VerificationOut
from app.routes.deps import SessionDep, allow
from app.routes.pagination import Cursor, IdFilter, Limit, Time, decode_cursor, encode_cursor
from app.schemas import Page
from app.security import Principal, Role

router = APIRouter(prefix="/decisions", tags=["decisions"])
Auditor = Annotated[Principal, Depends(allow(Role.COMPLIANCE, Role.ADMIN))]
Reader = Annotated[
    Principal, Depends(allow(Role.COMPLIANCE, Role.EMPLOYEE, scope="decisions:read"))
]
MAX_AGGREGATE_SPAN = timedelta(days=366)


def filters(
    principal: Reader,
    rule: Annotated[str | None, Query(max_length=100, pattern=r"^[a-z0-9-]+$")] = None,
    outcome: Annotated[str | None, Query(max_length=16, pattern=r"^[a-z_]+$")] = None,
    employee_id: IdFilter = None,
    since: Time = None,
    until: Time = None,
) -> decision_reports.Filters:
    """Query filters; an employee's are always narrowed to their own decisions."""
    if principal.role is Role.EMPLOYEE:
        if employee_id not in (None, principal.employee_id):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Employees see their own decisions.")
        employee_id = principal.employee_id
    return decision_reports.Filters(
        rule=rule,
        outcome=outcome,
        employee_id=employee_id,
        since=since,
        until=until,
    )


FiltersDep = Annotated[decision_reports.Filters, Depends(filters)]


@router.get("", response_model=Page[DecisionOut])
def list_decisions(
    session: SessionDep, f: FiltersDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[DecisionOut]:
    """Decisions, newest first, by rule hit, outcome, employee and time (`since` ≤ t < `until`)."""
    rows = decision_reports.decisions(session, f, before=decode_cursor(cursor), limit=limit)
    items = [DecisionOut.model_validate(r) for r in rows]
    return Page(items=items, next_cursor=encode_cursor([d.id for d in items], limit))


@router.get("/aggregates", response_model=AggregatesOut)
def aggregates(session: SessionDep, f: FiltersDep) -> AggregatesOut:
    """Counts per rule per day and per employee (default: the last 30 days, at most a year)."""
    until = f.until or datetime.now(UTC)
    since = f.since or until - timedelta(days=30)
    if until - since > MAX_AGGREGATE_SPAN or since >= until:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "since..until spans at most 366 days."
        )
    result = decision_reports.aggregate(
        session,
        decision_reports.Filters(
            rule=f.rule, outcome=f.outcome, employee_id=f.employee_id, since=since, until=until
        ),
    )
    return AggregatesOut(
        since=since,
        until=until,
        decisions=result.total,
        by_rule_per_day=[
            RuleDayCount(day=day, rule=rule, outcome=outcome, count=n)
            for (day, rule, outcome), n in sorted(result.by_rule_per_day.items())
        ],
        by_employee=[
            EmployeeCount(employee_id=employee, outcome=outcome, count=n)
            for (employee, outcome), n in sorted(
                result.by_employee.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])
            )
        ],
    )


@router.get("/verify", response_model=VerificationOut)
def verify(
    session: SessionDep,
    _auditor: Auditor,
    anchor_id: IdFilter = None,
    anchor_hash: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
) -> VerificationOut:
    """Walk the hash chain; name the first record that was altered or removed. Note the
    `head_id` and `head_hash` it returns somewhere outside Mailroom, and pass them back later
    as `anchor_id` and `anchor_hash`: a log rewritten or cut back behind them is caught."""
    if (anchor_id is None) != (anchor_hash is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "anchor_id and anchor_hash go together."
        )
    anchor = ledger.Anchor(anchor_id, anchor_hash) if anchor_id and anchor_hash else None
    result = ledger.verify(session, anchor=anchor)
    return VerificationOut(
        ok=result.ok,
        checked=result.checked,
        first_broken=result.first_broken,
        problem=result.problem,
        head_id=result.head_id,
        head_hash=result.head_hash,
    )
