"""Decide: guardrails first, then the policy's ordered rules; every verdict is kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from capture.parse import ParsedMessage
from policies.guardrails import GUARDRAILS
from policies.model import (
    AllOf,
    AnyOf,
    Decision,
    Expr,
    LoadedPolicy,
    NotOf,
    Outcome,
    PredicateCall,
    Rule,
    Verdict,
)
from policies.observe import Ahead, Context, Observations, observe
from policies.predicates import PREDICATES, Finding

Compiled = Callable[[Observations, bytes], Finding]


class PolicyError(ValueError):
    """A policy that cannot be applied; `problems` names each rule and field at fault."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Engine:
    """A policy compiled once: predicate names resolved and parameters validated.

    Guardrails are asked first, in order, and the first that hits decides. Otherwise the
    rules are asked in order and the first that matches decides; with none, the policy's
    default outcome applies. The verdicts of everything asked are kept, misses included.
    """

    policy: LoadedPolicy
    rules: tuple[tuple[Rule, Compiled], ...]

    @classmethod
    def build(cls, loaded: LoadedPolicy) -> Engine:
        problems: list[str] = []
        rules = []
        for rule in loaded.policy.rules:
            rules.append((rule, compile_rule(rule, problems)))
        if problems:
            raise PolicyError(problems)
        return cls(loaded, tuple(rules))

    def decide(
        self, message: ParsedMessage, context: Context, *, ahead: Ahead | None = None
    ) -> tuple[Decision, Observations]:
        observations = observe(message, context, ahead=ahead)
        return self.decide_observed(observations, context.secret), observations

    def decide_observed(self, obs: Observations, secret: bytes) -> Decision:
        """The decision from facts alone: simulation replays this on stored facts."""
        verdicts: list[Verdict] = []
        for guardrail in GUARDRAILS:
            finding = guardrail.check(obs)
            verdicts.append(Verdict(guardrail.id, finding.hit, finding.reason, finding.evidence))
            if finding.hit:
                return self._decision(guardrail.outcome, guardrail.id, verdicts, obs, None)
        for rule, compiled in self.rules:
            finding = compiled(obs, secret)
            verdicts.append(Verdict(rule.id, finding.hit, finding.reason, finding.evidence))
            if finding.hit:  # the first rule that matches decides; later ones are not asked
                return self._decision(rule.outcome, rule.id, verdicts, obs, rule)
        outcome = self.policy.policy.default_outcome
        return self._decision(outcome, None, verdicts, obs, None)

    def _decision(
        self,
        outcome: Outcome,
        deciding: str | None,
        verdicts: list[Verdict],
        obs: Observations,
        rule: Rule | None,
    ) -> Decision:
        visibility = (rule.visibility if rule else None) or self.policy.policy.default_visibility
        return Decision(
            outcome=outcome,
            policy_sha256=self.policy.sha256,
            verdicts=tuple(verdicts),
            deciding_rule=deciding,
            visibility=visibility,
            facts=obs.facts,
        )


def compile_rule(rule: Rule, problems: list[str]) -> Compiled:
    """Resolve a rule's predicates and check their parameters, adding what is wrong."""
    if rule.id in (g.id for g in GUARDRAILS):  # their verdicts share the log's one namespace
        problems.append(f"rule '{rule.id}': id: '{rule.id}' is a guardrail's id")
    return _compile(rule.when, f"rule '{rule.id}': when", problems)


def _compile(expr: Expr, where: str, problems: list[str]) -> Compiled:
    if isinstance(expr, AllOf):
        parts = [_compile(e, f"{where}.all[{i}]", problems) for i, e in enumerate(expr.all)]
        return lambda obs, secret: _combine([p(obs, secret) for p in parts], all)
    if isinstance(expr, AnyOf):
        parts = [_compile(e, f"{where}.any[{i}]", problems) for i, e in enumerate(expr.any)]
        return lambda obs, secret: _combine([p(obs, secret) for p in parts], any)
    if isinstance(expr, NotOf):
        inner = _compile(expr.not_, f"{where}.not", problems)
        return lambda obs, secret: _negate(inner(obs, secret))
    return _compile_call(expr, where, problems)


def _compile_call(call: PredicateCall, where: str, problems: list[str]) -> Compiled:
    spec = PREDICATES.get(call.name)
    if spec is None:
        problems.append(f"{where}: unknown predicate '{call.name}'")
        return lambda obs, secret: Finding(False, "unknown predicate")
    try:
        params = spec.params.model_validate(call.params)
    except ValidationError as error:
        for issue in error.errors():
            field = ".".join(str(part) for part in issue["loc"]) or "parameters"
            problems.append(f"{where}: {call.name}.{field}: {issue['msg']}")
        return lambda obs, secret: Finding(False, "invalid parameters")
    return lambda obs, secret: spec.check(obs, params, secret)


def _combine(findings: list[Finding], mode: Callable[[list[bool]], bool]) -> Finding:
    hit = mode([f.hit for f in findings])
    relevant = [f for f in findings if f.hit == hit] or findings
    reason = "; ".join(f.reason for f in relevant)
    evidence = tuple(e for f in relevant for e in f.evidence)
    return Finding(hit, reason, evidence)


def _negate(finding: Finding) -> Finding:
    return Finding(not finding.hit, f"not ({finding.reason})", finding.evidence)
