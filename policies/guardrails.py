"""Decide: consent guardrails, checked before any rule; no policy can remove or outvote them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from policies.model import Outcome
from policies.observe import Observations
from policies.predicates import Finding


@dataclass(frozen=True)
class Guardrail:
    id: str
    description: str
    outcome: Outcome
    check: Callable[[Observations], Finding]


def _submitter_not_employee(obs: Observations) -> Finding:
    if obs.facts["submitter_known"]:
        return Finding(False, "the submitter is an employee")
    return Finding(True, "the submitter is not a known employee address or alias")


def _capture_paused(obs: Observations) -> Finding:
    if obs.facts.get("capture_paused"):
        return Finding(True, "the employee has paused capture")
    return Finding(False, "capture is not paused")


GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail(
        "submitter-not-employee",
        "Only employees can submit mail; anything else is refused and nothing is kept.",
        Outcome.REJECT,
        _submitter_not_employee,
    ),
    Guardrail(
        "capture-paused",
        "An employee who paused capture has nothing captured until they resume.",
        Outcome.DROP,
        _capture_paused,
    ),
)
