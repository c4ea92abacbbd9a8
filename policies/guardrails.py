"""Decide: consent guardrails, checked before any rule; no policy can remove or outvote them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from policies.model import Channel, Outcome
from policies.observe import Observations
from policies.predicates import Finding


@dataclass(frozen=True)
class Guardrail:
    id: str
    description: str
    outcome: Outcome
    check: Callable[[Observations], Finding]


def _counted(fact: str, hit: str, miss: str) -> Callable[[Observations], Finding]:
    def check(obs: Observations) -> Finding:
        count = obs.facts.get(fact, 0)
        return Finding(True, hit.format(count=count)) if count else Finding(False, miss)

    return check


def _submitter_not_employee(obs: Observations) -> Finding:
    if not obs.facts["submitter_known"]:
        return Finding(True, "the submitter is not a known employee address or alias")
    submitted = obs.facts["channel"] in (Channel.BCC.value, Channel.FORWARD.value)
    if submitted and not obs.facts.get("from_is_employee", True):
        return Finding(True, "the From address is not an employee address or alias")
    if not obs.facts.get("submitter_proven", True):
        if not submitted:  # read from a mailbox: proven by configuration, unless forged
            return Finding(
                True, "our mail server found the From address, one of ours, forged (DMARC)"
            )
        return Finding(
            True, "the submitter did not prove the From address is theirs (SMTP AUTH or DKIM)"
        )
    return Finding(False, "the submitter is an employee")


def _capture_paused(obs: Observations) -> Finding:
    if obs.facts.get("capture_paused"):
        return Finding(True, "the employee has paused capture")
    return Finding(False, "capture is not paused")


def _marked_private(obs: Observations) -> Finding:
    if obs.facts.get("marked_private"):
        return Finding(True, "the sender marked it personal or private (Sensitivity header)")
    if obs.facts.get("private_subject_tag"):
        return Finding(True, "the subject carries a private tag")
    return Finding(False, "not marked private")


GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail(
        "submitter-not-employee",
        "Only employees can submit mail; anything else is refused and nothing is kept.",
        Outcome.REJECT,
        _submitter_not_employee,
    ),
    Guardrail(
        "contact-erased",
        "Mail with a person whose data was erased at their request is never kept again.",
        Outcome.DROP,
        _counted(
            "erased_participants",
            "{count} participant(s) had their data erased",
            "no participant had their data erased",
        ),
    ),
    Guardrail(
        "contact-objected",
        "Mail with a person who objected to being in the CRM is not kept.",
        Outcome.DROP,
        _counted(
            "objected_participants",
            "{count} participant(s) objected to processing",
            "no participant objected",
        ),
    ),
    Guardrail(
        "capture-paused",
        "An employee who paused capture has nothing captured until they resume.",
        Outcome.DROP,
        _capture_paused,
    ),
    Guardrail(
        "personal-contact",
        "Mail with someone on the employee's own personal-contacts list is never kept.",
        Outcome.DROP,
        _counted(
            "personal_contact_participants",
            "{count} participant(s) are on the employee's personal-contacts list",
            "no participant is on the employee's personal-contacts list",
        ),
    ),
    Guardrail(
        "marked-private",
        "Mail the sender marked personal or private, or tagged private in the subject, "
        "is never kept.",
        Outcome.DROP,
        _marked_private,
    ),
)
