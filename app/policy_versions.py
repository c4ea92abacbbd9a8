"""Serve: the published policy's versions, their differences, and simulations against the log."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session

from app.decision_reports import NO_RULE
from app.ledger import ACTION_CHANNEL
from app.models import DecisionRecord, PolicyVersion
from policies.engine import Engine, PolicyError
from policies.loader import parse_yaml
from policies.model import AllOf, AnyOf, Decision, Expr, NotOf, Policy
from policies.observe import Observations


def versions(session: Session) -> list[PolicyVersion]:
    return list(session.scalars(sa.select(PolicyVersion).order_by(PolicyVersion.id.desc())))


def version(session: Session, version_id: int) -> PolicyVersion | None:
    return session.get(PolicyVersion, version_id)


@dataclass(frozen=True)
class RuleChange:
    id: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class PolicyDiff:
    unified: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[RuleChange, ...]
    reordered: bool


def diff(old: PolicyVersion, new: PolicyVersion) -> PolicyDiff:
    """A unified diff of the sources and what it means, rule by rule."""
    unified = "".join(
        difflib.unified_diff(
            old.source.splitlines(keepends=True),
            new.source.splitlines(keepends=True),
            fromfile=f"version {old.id} ({old.sha256[:12]})",
            tofile=f"version {new.id} ({new.sha256[:12]})",
        )
    )
    before, after = _rules(old.source), _rules(new.source)
    changed = tuple(
        RuleChange(
            rule_id,
            tuple(
                sorted(
                    k
                    for k in set(before[rule_id]) | set(after[rule_id])
                    if before[rule_id].get(k) != after[rule_id].get(k)
                )
            ),
        )
        for rule_id in after
        if rule_id in before and before[rule_id] != after[rule_id]
    )
    common_before = [r for r in before if r in after]
    common_after = [r for r in after if r in before]
    return PolicyDiff(
        unified=unified,
        added=tuple(r for r in after if r not in before),
        removed=tuple(r for r in before if r not in after),
        changed=changed,
        reordered=common_before != common_after,
    )


def _rules(source: str) -> dict[str, dict[str, Any]]:
    raw = yaml.safe_load(source) or {}
    return {str(rule.get("id")): rule for rule in raw.get("rules", []) if isinstance(rule, dict)}


@dataclass(frozen=True)
class Simulation:
    evaluated: int
    changed: int
    transitions: Counter[tuple[str, str, str]]  # (from outcome, to outcome, deciding rule)
    not_replayable: int  # recorded before a fact the candidate asks about existed


# Outcomes whose mail was kept. The domains of any other message's correspondents are kept
# out of a replay: a candidate with a `domain-in` rule would otherwise tell whoever runs the
# simulation whether mail that was dropped (or held, and perhaps discarded) as personal went
# to a domain of their choosing. A candidate that must read them counts it as not replayable.
KEPT_OUTCOMES = frozenset({"capture", "metadata_only"})
UNKEPT_BLIND = ("external_domain_tokens",)


# Predicates that read the text and parts. The facts of a message decided on its header
# section (`body_read: false`) hold its subject's personal probability and nothing of its
# parts: a candidate asking these of it would have had its body read (unless it was over the
# size cap, which the log does not say), so the facts cannot tell what it would decide.
BODY_PREDICATES = frozenset({"personal-content", "calendar-only"})


def _asks_of_the_body(candidate: Engine, decision: Decision) -> bool:
    """Whether the candidate asked, on its way to `decision`, a rule that reads the text."""
    rules = {rule.id: rule for rule in candidate.policy.policy.rules}
    return any(
        name in BODY_PREDICATES
        for verdict in decision.verdicts
        if verdict.rule in rules
        for name in _predicates(rules[verdict.rule].when)
    )


def _predicates(expr: Expr) -> Iterator[str]:
    if isinstance(expr, AllOf | AnyOf):
        for part in expr.all if isinstance(expr, AllOf) else expr.any:
            yield from _predicates(part)
    elif isinstance(expr, NotOf):
        yield from _predicates(expr.not_)
    else:
        yield expr.name


MARKED_PRIVATE = "marked-private"  # the guardrail that reads the private subject tags


class _Tags:
    """Whether a record's `private_subject_tag` fact holds under the candidate's tags. It
    says whether the subject carried a tag of the policy it was decided under (or one of the
    employee's own); the subject is not kept. A tag the candidate adds could be in any
    subject without one, and one it removes could be all a tagged subject had."""

    def __init__(self, session: Session, candidate: Engine) -> None:
        self.session = session
        self.candidate = _lowered(candidate.policy.policy.private_subject_tags)
        self.by_version: dict[str, frozenset[str] | None] = {}

    def replayable(self, facts: dict[str, Any], decided_under: str, decision: Decision) -> bool:
        if MARKED_PRIVATE not in (v.rule for v in decision.verdicts) or facts.get("marked_private"):
            return True  # an earlier guardrail decided, or the Sensitivity header settles it
        if decided_under not in self.by_version:
            self.by_version[decided_under] = self._tags_of(decided_under)
        earlier = self.by_version[decided_under]
        if earlier is None:
            return False
        if facts.get("private_subject_tag"):
            return not earlier - self.candidate  # a removed tag may be all its subject had
        return not self.candidate - earlier  # an added tag may be in its subject

    def _tags_of(self, sha256: str) -> frozenset[str] | None:
        source = self.session.scalar(
            sa.select(PolicyVersion.source).where(PolicyVersion.sha256 == sha256)
        )
        try:
            raw = parse_yaml(source) if source is not None else None
        except PolicyError:  # refused by this release's stricter checks
            return None
        if not isinstance(raw, dict):
            return None
        default = Policy.model_fields["private_subject_tags"].get_default(call_default_factory=True)
        return _lowered(raw.get("private_subject_tags", default))


def _lowered(tags: object) -> frozenset[str]:
    """As observe matches them: lowercased, an empty tag matching nothing."""
    return frozenset(str(t).lower() for t in tags if t) if isinstance(tags, list) else frozenset()


def simulate(
    session: Session, candidate: Engine, secret: bytes, *, since: datetime | None = None
) -> Simulation:
    """Re-decide stored decisions from their content-free facts under a candidate policy."""
    query = (
        sa.select(DecisionRecord.outcome, DecisionRecord.facts, DecisionRecord.policy_sha256)
        .where(DecisionRecord.channel != ACTION_CHANNEL)  # actions decide no message
        .order_by(DecisionRecord.id)
    )
    if since is not None:
        query = query.where(DecisionRecord.created_at >= since)
    evaluated, changed, unknown = 0, 0, 0
    transitions: Counter[tuple[str, str, str]] = Counter()
    tags = _Tags(session, candidate)
    for outcome, facts, decided_under in session.execute(query.execution_options(yield_per=2000)):
        if outcome not in KEPT_OUTCOMES:
            facts = {k: v for k, v in facts.items() if k not in UNKEPT_BLIND}
        try:
            decision = candidate.decide_observed(Observations(facts=facts, notes={}), secret)
        except KeyError:
            unknown += 1
            continue
        if facts.get("body_read") is False and _asks_of_the_body(candidate, decision):
            unknown += 1
            continue
        if not tags.replayable(facts, decided_under, decision):
            unknown += 1
            continue
        evaluated += 1
        if decision.outcome.value != outcome:
            changed += 1
            transitions[(outcome, decision.outcome.value, decision.deciding_rule or NO_RULE)] += 1
    return Simulation(evaluated, changed, transitions, unknown)
