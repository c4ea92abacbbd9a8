"""Decide: whether a decision taken on a message's header section alone is already final.

A mailbox message is first decided on its headers (and its size, which the server tells).
When that decision keeps no text (drop; metadata only; a hold, which from a mailbox waits
without its text), and nothing the body could show would have changed which rule decided,
the body is never downloaded. Every rule asked before the deciding one, and the
deciding one itself, must therefore have an answer the body cannot change: three-valued
logic over the predicates, where an answer that reads the body is unknown.
"""

from __future__ import annotations

from capture.parse import ParsedMessage
from policies.automated import looks_like_bounce
from policies.engine import Engine
from policies.guardrails import GUARDRAILS
from policies.model import AllOf, AnyOf, Channel, Decision, Expr, NotOf, Outcome, PredicateCall
from policies.observe import Observations
from policies.predicates import PREDICATES, NoParams

# Predicates that read only headers, participants, the size and what the database knows.
# Not here: personal-content and calendar-only (they read the text and the MIME parts).
HEADER_PREDICATES = frozenset(
    {
        "internal-only",
        "external-participant",
        "known-contact",
        "no-correspondent",
        "unsolicited",
        "freemail-only",
        "bulk-mail",
        "auto-reply",
        "role-sender",
        "shares-family-name",
        "spam",
        "spamd-score",
        "domain-in",
        "channel-in",
        "larger-than",
    }
)
_GUARDRAIL_IDS = frozenset(g.id for g in GUARDRAILS)
# Mailbox channels: what was read is the message itself, never a forward to unwrap.
_MAILBOX_CHANNELS = frozenset({Channel.IMAP.value, Channel.IMPORT.value})

Known = bool | None  # hit, miss, or unknown until the body is read


def settled_on_headers(
    engine: Engine,
    decision: Decision,
    observations: Observations,
    headers: ParsedMessage,
    secret: bytes,
) -> bool:
    """True when this header-only decision keeps no text and the body could not change it,
    or when it drops the message and the body could only change which rule drops it."""
    if decision.outcome is Outcome.CAPTURE:
        return False  # a capture keeps the text: it is filed from the whole message
    if observations.facts.get("channel") not in _MAILBOX_CHANNELS:
        return False
    if decision.deciding_rule in _GUARDRAIL_IDS:
        return True  # guardrails read participants and headers only
    asked = {verdict.rule: verdict.hit for verdict in decision.verdicts}
    dropped = decision.outcome is Outcome.DROP
    for rule in engine.policy.policy.rules:
        # A rule of header predicates alone was answered by the engine already; the others
        # are asked again, with what reads the body unknown.
        answered = _reads_headers_only(rule.when) and rule.id in asked
        unknown = not answered and _evaluate(rule.when, observations, headers, secret) is None
        if rule.id == decision.deciding_rule:
            return not unknown
        if unknown and not (dropped and rule.outcome is Outcome.DROP):
            return False
        # An unanswered rule that would drop the message too, before one that drops it on its
        # headers: dropped either way, so its body is never downloaded ("never download
        # what the policy will drop"); the record names the rule the headers show.
    return True  # no rule can match, whatever the body says: the default outcome stands


def _evaluate(expr: Expr, obs: Observations, headers: ParsedMessage, secret: bytes) -> Known:
    if isinstance(expr, AllOf):
        parts = [_evaluate(e, obs, headers, secret) for e in expr.all]
        if any(p is False for p in parts):
            return False
        return True if all(p is True for p in parts) else None
    if isinstance(expr, AnyOf):
        parts = [_evaluate(e, obs, headers, secret) for e in expr.any]
        if any(p is True for p in parts):
            return True
        return False if all(p is False for p in parts) else None
    if isinstance(expr, NotOf):
        inner = _evaluate(expr.not_, obs, headers, secret)
        return None if inner is None else not inner
    return _call(expr, obs, headers, secret)


def _call(call: PredicateCall, obs: Observations, headers: ParsedMessage, secret: bytes) -> Known:
    spec = PREDICATES[call.name]
    hit = spec.check(obs, _params(call), secret).hit
    if call.name in HEADER_PREDICATES:
        return hit
    if call.name == "bounce" and (hit or not looks_like_bounce(headers)):
        return hit  # a bounce shown by its headers stays one; the body is only read for
        # messages whose sender or subject look like a bounce
    return None


# Each call's parameters, validated once (the engine did so when it compiled the policy);
# the call itself is kept alongside, so that its id cannot be reused by another while cached.
_VALIDATED: dict[int, tuple[PredicateCall, NoParams]] = {}


def _params(call: PredicateCall) -> NoParams:
    cached = _VALIDATED.get(id(call))
    if cached is not None and cached[0] is call:
        return cached[1]
    params = PREDICATES[call.name].params.model_validate(call.params)
    _VALIDATED[id(call)] = (call, params)
    return params


_HEADERS_ONLY: dict[int, tuple[Expr, bool]] = {}  # as _VALIDATED: by id, the rule kept


def _reads_headers_only(expr: Expr) -> bool:
    cached = _HEADERS_ONLY.get(id(expr))
    if cached is not None and cached[0] is expr:
        return cached[1]
    result = _header_predicates_only(expr)
    _HEADERS_ONLY[id(expr)] = (expr, result)
    return result


def _header_predicates_only(expr: Expr) -> bool:
    if isinstance(expr, AllOf):
        return all(_header_predicates_only(e) for e in expr.all)
    if isinstance(expr, AnyOf):
        return all(_header_predicates_only(e) for e in expr.any)
    if isinstance(expr, NotOf):
        return _header_predicates_only(expr.not_)
    return expr.name in HEADER_PREDICATES
