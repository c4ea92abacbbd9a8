"""Decide: the vocabulary a policy may use; each predicate is small, pure and explains itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from policies.observe import Observations, domain_token


@dataclass(frozen=True)
class Finding:
    """A predicate's answer: hit or miss, a sentence saying why, and the evidence."""

    hit: bool
    reason: str
    evidence: tuple[str, ...] = ()


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainList(NoParams):
    domains: list[str] = Field(min_length=1)


class SizeLimit(NoParams):
    bytes: int = Field(gt=0)


Check = Callable[[Observations, Any, bytes], Finding]


@dataclass(frozen=True)
class Predicate:
    name: str
    description: str
    params: type[NoParams]
    check: Check


PREDICATES: dict[str, Predicate] = {}


def predicate(
    name: str, description: str, params: type[NoParams] = NoParams
) -> Callable[[Check], Check]:
    """Register a predicate under its stable kebab-case name."""

    def register(check: Check) -> Check:
        PREDICATES[name] = Predicate(name, description, params, check)
        return check

    return register


@predicate("internal-only", "Every participant is at one of the organization's own domains.")
def internal_only(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    external = obs.facts["external_participants"]
    if obs.facts["participants"] and not external:
        return Finding(True, "every participant is at an organization domain")
    return Finding(False, f"{external} participant(s) outside the organization")


@predicate("bulk-mail", "Mailing-list or bulk mail: List-* headers, Precedence, ESP headers.")
def bulk_mail(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    evidence = [f"header {h}" for h in obs.facts["list_headers"] + obs.facts["esp_headers"]]
    if obs.facts["precedence_bulk"]:
        evidence.append("Precedence: " + ",".join(obs.notes.get("precedence", ("bulk",))))
    if evidence:
        return Finding(True, "the message carries bulk or mailing-list markers", tuple(evidence))
    return Finding(False, "no list, precedence or bulk-sender headers")


@predicate("known-contact", "At least one external participant is already a contact.")
def known_contact(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    count = obs.facts["known_contacts"]
    if count:
        return Finding(True, f"{count} external participant(s) are known contacts")
    return Finding(False, "no external participant is a known contact")


@predicate("external-participant", "At least one participant is outside the organization.")
def external_participant(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    count = obs.facts["external_participants"]
    if count:
        return Finding(True, f"{count} participant(s) outside the organization")
    return Finding(False, "no participant outside the organization")


@predicate("domain-in", "An external participant's domain is on the given list.", params=DomainList)
def domain_in(obs: Observations, params: DomainList, secret: bytes) -> Finding:
    wanted = {domain_token(secret, d): d.lower() for d in params.domains}
    matched = sorted(wanted[t] for t in obs.facts["external_domain_tokens"] if t in wanted)
    if matched:
        return Finding(True, "an external domain is on the list", tuple(matched))
    return Finding(False, "no external domain is on the list")


@predicate("larger-than", "The raw message is larger than the given number of bytes.", SizeLimit)
def larger_than(obs: Observations, params: SizeLimit, _secret: bytes) -> Finding:
    size = obs.facts["size"]
    if size > params.bytes:
        return Finding(True, f"{size} bytes is more than {params.bytes}")
    return Finding(False, f"{size} bytes is within {params.bytes}")
