"""Decide: the vocabulary a policy may use; each predicate is small, pure and explains itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from capture.parse import mail_domain
from policies.model import Channel
from policies.observe import PROBABILITY_PLACES, Observations, domain_token, floor_decimals


class Finding(NamedTuple):
    """A predicate's answer: hit or miss, a sentence saying why, and the evidence. A named
    tuple, as Verdict: quicker to build than a frozen dataclass, and as immutable."""

    hit: bool
    reason: str
    evidence: tuple[str, ...] = ()


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainList(NoParams):
    domains: list[str] = Field(min_length=1)

    @field_validator("domains")
    @classmethod
    def _as_mail_spells_them(cls, value: list[str]) -> list[str]:
        """As participants' domains are spelt (`bücher.example` is `xn--bcher-kva.example`),
        or the listed domain could never match one."""
        return [mail_domain(d) or d.lower() for d in value]


class SizeLimit(NoParams):
    bytes: int = Field(gt=0, le=2**40)  # a terabyte: no message is larger


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


@predicate("internal-only", "Every correspondent is at one of the organization's own domains.")
def internal_only(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    external = obs.facts["external_participants"]
    if obs.facts["correspondents"] and not external:
        return Finding(True, "every participant is at an organization domain")
    if not obs.facts["correspondents"]:
        return Finding(False, "no correspondent besides the employee")
    return Finding(False, f"{external} participant(s) outside the organization")


@predicate("no-correspondent", "Nobody but the employee is named (To and Cc empty or self).")
def no_correspondent(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    if obs.facts["correspondents"]:
        return Finding(False, f"{obs.facts['correspondents']} correspondent(s) named")
    return Finding(True, "no correspondent besides the employee is named")


class Answering(NoParams):
    """Which mail, answered, makes a message from a stranger solicited: any message Mailroom
    holds (`any`), or only mail kept, captured or as metadata (`kept`). With `kept`, an
    answer to mail still waiting for its employee's review waits too: a stranger's second
    message, or a third party's reply to it, is not yet a conversation the employee took up."""

    answers: Literal["any", "kept"] = "any"


@predicate(
    "unsolicited",
    "Inbound mail from someone who is not a contact, not answering anything Mailroom holds "
    "(with answers: kept, anything it keeps).",
    Answering,
)
def unsolicited(obs: Observations, params: Answering, _secret: bytes) -> Finding:
    if not obs.facts["inbound"]:
        return Finding(False, "the employee or a colleague sent it")
    if obs.facts["sender_known_contact"]:
        return Finding(False, "the sender is a known contact")
    if not obs.facts["replies_to_known"]:
        return Finding(True, "a first message from someone who is not yet a contact")
    if params.answers == "any":
        return Finding(False, "it answers a message Mailroom holds")
    # Asked only here: a decision recorded before this fact existed replays where it can.
    if obs.facts["replies_to_kept"]:
        return Finding(False, "it answers a message Mailroom keeps")
    return Finding(True, "it answers only mail still waiting for review")


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


class Threshold(NoParams):
    above: float = Field(ge=0.0, le=1.0)

    @field_validator("above")
    @classmethod
    def _decimals(cls, value: float) -> float:
        """The probability is decided on cut to PROBABILITY_PLACES decimals: a threshold with
        more would not mean "at least P"."""
        exponent = Decimal(repr(value)).as_tuple().exponent
        if isinstance(exponent, int) and -exponent > PROBABILITY_PLACES:
            raise ValueError(f"at most {PROBABILITY_PLACES} decimals")
        return value


class SenderKinds(NoParams):
    kinds: list[Literal["role", "noreply", "missing"]] = Field(
        default=["role", "noreply", "missing"], min_length=1
    )


class Channels(NoParams):
    channels: list[Channel] = Field(min_length=1)


@predicate("freemail-only", "Every external participant uses a free-mail provider (gmail.com…).")
def freemail_only(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    domains, freemail = obs.facts["external_domains"], obs.facts["external_freemail_domains"]
    if domains and freemail == domains:
        return Finding(
            True,
            "every external domain is a free-mail provider",
            obs.notes.get("external_domains", ()),
        )
    return Finding(False, f"{domains - freemail} external domain(s) are not free-mail")


@predicate("auto-reply", "An auto-responder wrote it (RFC 3834 Auto-Submitted, out-of-office).")
def auto_reply(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    signal = obs.facts["auto_reply"]
    if signal:
        return Finding(True, f"auto-reply marker: {signal}", (signal,))
    return Finding(False, "no auto-reply header or out-of-office subject")


@predicate("bounce", "A delivery failure report (DSN or a non-standard bounce).")
def bounce(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    signal = obs.facts["bounce"]
    if signal:
        return Finding(True, f"delivery failure report ({signal})", (signal,))
    if obs.facts["report_type"] == "feedback-report":
        return Finding(True, "abuse feedback report (RFC 5965)", ("feedback-report",))
    return Finding(False, "not a delivery report")


@predicate(
    "role-sender",
    "The sender is a role or no-reply mailbox, not a person (info@…, no-reply@…).",
    params=SenderKinds,
)
def role_sender(obs: Observations, params: SenderKinds, _secret: bytes) -> Finding:
    kind = obs.facts["sender_kind"]
    if kind in params.kinds:
        return Finding(True, f"the sender is a {kind} mailbox", (kind,))
    return Finding(False, f"the sender is {'a ' + kind if kind else 'a personal'} mailbox")


@predicate("calendar-only", "A calendar invitation or reply with no message of its own.")
def calendar_only(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    if obs.facts["calendar_only"]:
        return Finding(True, "only a calendar item and a generated line of text")
    return Finding(False, "not a bare calendar item")


@predicate("shares-family-name", "An external correspondent has the employee's family name.")
def shares_family_name(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    count = obs.facts["shares_family_name"]
    if count:
        return Finding(True, f"{count} correspondent(s) share the employee's family name")
    return Finding(False, "no correspondent shares the employee's family name")


@predicate(
    "spam",
    "Our own mail servers' spam filter flagged it (X-Spam-Flag / X-Spam-Status: Yes, from a "
    "synced mailbox or a trusted relay).",
)
def spam(obs: Observations, _params: NoParams, _secret: bytes) -> Finding:
    if obs.facts["spam_flag"]:
        return Finding(True, "flagged as spam by an upstream filter")
    return Finding(False, "no spam verdict")


class Score(NoParams):
    above: float = Field(ge=-1000.0, le=1000.0)  # spamd scores lie well within


@predicate("spamd-score", "SpamAssassin's spamd (where configured) scores it at least this.", Score)
def spamd_score(obs: Observations, params: Score, _secret: bytes) -> Finding:
    score = obs.facts.get("spamd_score")
    if score is None:
        return Finding(False, "no spamd score (spamd not configured or not answering)")
    shown = _cut(score, params.above, places=1)
    if score >= params.above:
        return Finding(True, f"spamd scores it {shown} ≥ {params.above}")
    return Finding(False, f"spamd scores it {shown} < {params.above}")


@predicate("channel-in", "It arrived through one of the given channels.", params=Channels)
def channel_in(obs: Observations, params: Channels, _secret: bytes) -> Finding:
    channel = obs.facts["channel"]
    if channel in {c.value for c in params.channels}:
        return Finding(True, f"arrived by {channel}")
    return Finding(False, f"arrived by {channel}")


@predicate(
    "personal-content",
    "The text reads as personal (family, leisure, feelings) by the bundled classifier.",
    params=Threshold,
)
def personal_content(obs: Observations, params: Threshold, _secret: bytes) -> Finding:
    probability = obs.facts["personal_probability"]
    signals = obs.notes.get("personal_signals", ())
    shown = _cut(probability, params.above, places=2)
    if probability >= params.above:
        return Finding(True, f"reads as personal: {shown} ≥ {params.above}", signals)
    return Finding(False, f"reads as business: {shown} < {params.above}", signals)


def _cut(value: float, threshold: float, *, places: int) -> str:
    """`value` to as many decimals as `threshold` has (at least `places`), cut rather than
    rounded, so the reason compares as the decision did: 0.8636 < 0.864 never reads 0.864."""
    return floor_decimals(value, _decimals(threshold, places))


@cache
def _decimals(threshold: float, places: int) -> int:
    exponent = Decimal(repr(threshold)).as_tuple().exponent
    return max(places, -exponent if isinstance(exponent, int) else 0)
