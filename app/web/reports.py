"""Serve: what the compliance pages show, read from the decision log alone (never content)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.ledger import ACTION_CHANNEL
from app.models import DecisionRecord, Employee, PolicyVersion
from app.web.render import GUARDRAIL_IDS, NO_RULE, policy_anchor
from policies.model import LoadedPolicy, Outcome

OUTCOMES = tuple(o.value for o in Outcome)
COLOURS = {
    "capture": "#2f6f3e",
    "metadata_only": "#6a9fd4",
    "hold": "#d9a420",
    "drop": "#8a8a8a",
    "reject": "#b23b3b",
}


@dataclass
class Activity:
    """Decisions per day and outcome, and per deciding rule, over a window (decisions on
    messages: not the actions chained into the same log, such as review choices)."""

    days: list[date]
    per_day: dict[date, Counter[str]]
    per_rule: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, outcome)
    # The policy version (sha256) that last decided by each (rule, outcome): where a rule
    # the version in force no longer has is explained.
    last_policy: dict[tuple[str, str], str] = field(default_factory=dict)


def activity(session: Session, now: datetime, *, days: int = 30) -> Activity:
    since = (now - timedelta(days=days - 1)).date()
    start = datetime.combine(since, datetime.min.time(), tzinfo=now.tzinfo)
    query = (
        sa.select(
            DecisionRecord.created_at,
            DecisionRecord.outcome,
            DecisionRecord.rules,
            DecisionRecord.policy_sha256,
        )
        .where(DecisionRecord.created_at >= start, DecisionRecord.channel != ACTION_CHANNEL)
        .order_by(DecisionRecord.id)
        .execution_options(yield_per=2000)
    )
    result = Activity(
        days=[since + timedelta(days=i) for i in range(days)],
        per_day={since + timedelta(days=i): Counter() for i in range(days)},
    )
    for created_at, outcome, rules, policy_sha256 in session.execute(query):
        day = created_at.date()
        if day not in result.per_day:  # dated ahead of this host's clock: on no day shown
            continue
        result.per_day[day][outcome] += 1
        key = (str(rules[0]) if rules else NO_RULE, outcome)
        result.per_rule[key] += 1
        result.last_policy[key] = policy_sha256
    return result


@dataclass(frozen=True)
class RuleRow:
    rule: str
    outcome: str
    count: int
    href: str  # where the rule is explained


def per_rule(
    activity: Activity, in_force: LoadedPolicy, versions: list[PolicyVersion]
) -> list[RuleRow]:
    """Decisions per deciding rule, most first, each linked to its place on /policy; a rule
    the version in force no longer has (renamed, removed) to the last version that used it."""
    current = {rule.id for rule in in_force.policy.rules} | GUARDRAIL_IDS | {NO_RULE}
    version_ids = {v.sha256: v.id for v in versions}
    rows = []
    for (rule, outcome), count in sorted(activity.per_rule.items(), key=lambda item: -item[1]):
        version = version_ids.get(activity.last_policy[(rule, outcome)])
        if rule in current or version is None:
            href = f"/policy#{policy_anchor(rule)}"
        else:
            href = f"/policy/versions/{version}"
        rows.append(RuleRow(rule, outcome, count, href))
    return rows


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    colour: str
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bar_width: float
    bars: tuple[Bar, ...]
    peak: int
    first: date
    last: date


def chart(data: Activity, *, width: int = 600, height: int = 160) -> Chart:
    """Stacked bars, one per day, drawn as inline SVG by the template."""
    peak = max((sum(c.values()) for c in data.per_day.values()), default=0) or 1
    slot = width / max(len(data.days), 1)
    bars: list[Bar] = []
    for i, day in enumerate(data.days):
        y = float(height)
        for outcome in OUTCOMES:
            count = data.per_day[day][outcome]
            if not count:
                continue
            h = height * count / peak
            y -= h
            label = f"{day.isoformat()}: {count} {outcome}"
            bars.append(Bar(i * slot + 1, y, h, COLOURS[outcome], label))
    return Chart(width, height, max(slot - 2, 1), tuple(bars), peak, data.days[0], data.days[-1])


@dataclass(frozen=True)
class Consistency:
    """One employee's outcomes, and how far their share of unkept mail is from the team's."""

    email: str
    total: int
    counts: dict[str, int]
    unkept_share: float
    deviation: float  # percentage points from the team's share


def consistency(session: Session) -> list[Consistency]:
    query = (
        sa.select(Employee.email, DecisionRecord.outcome, sa.func.count())
        .join(Employee, Employee.id == DecisionRecord.employee_id)
        .where(DecisionRecord.channel != ACTION_CHANNEL)  # a review choice decides no message
        .group_by(Employee.email, DecisionRecord.outcome)
    )
    counts: dict[str, Counter[str]] = {}
    for email, outcome, n in session.execute(query):
        counts.setdefault(email, Counter())[outcome] = n
    unkept = ("hold", "drop", "reject")
    team_total = sum(sum(c.values()) for c in counts.values()) or 1
    team_share = sum(c[o] for c in counts.values() for o in unkept) / team_total
    rows = []
    for email, c in sorted(counts.items()):
        total = sum(c.values())
        share = sum(c[o] for o in unkept) / total
        rows.append(Consistency(email, total, dict(c), share, round(100 * (share - team_share), 1)))
    return rows


@dataclass(frozen=True)
class LogRow:
    id: int
    created_at: datetime
    channel: str
    employee: str | None
    outcome: str
    rules: list[str]
    policy: str

    @property
    def action(self) -> bool:
        """An action chained into the log (a review choice, an erasure, a purge): no rule,
        nor the policy's default, decided it."""
        return self.channel == ACTION_CHANNEL


def recent_decisions(session: Session, *, limit: int = 50) -> list[LogRow]:
    query = (
        sa.select(DecisionRecord, Employee.email)
        .outerjoin(Employee, Employee.id == DecisionRecord.employee_id)
        .order_by(DecisionRecord.id.desc())
        .limit(limit)
    )
    return [
        LogRow(d.id, d.created_at, d.channel, email, d.outcome, list(d.rules), d.policy_sha256)
        for d, email in session.execute(query)
    ]
