"""Decide: the types of a published policy and of the decisions it makes."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RULE_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # matched whole: `$` lets "id\n" through
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class Outcome(enum.StrEnum):
    """What happens to a message. Stored by value; the values never change meaning."""

    CAPTURE = "capture"
    METADATA_ONLY = "metadata_only"
    HOLD_FOR_REVIEW = "hold"
    DROP = "drop"
    REJECT = "reject"

    @property
    def keeps_message(self) -> bool:
        return self in (Outcome.CAPTURE, Outcome.METADATA_ONLY, Outcome.HOLD_FOR_REVIEW)


class Channel(enum.StrEnum):
    BCC = "bcc"
    FORWARD = "forward"
    IMAP = "imap"
    IMPORT = "import"


class Visibility(enum.StrEnum):
    SHARED = "shared"
    SUBJECT_ONLY = "subject_only"
    PRIVATE = "private"


class Verdict(NamedTuple):
    """One rule's or guardrail's answer about one message. A named tuple: a message gets
    some twenty, and a frozen dataclass takes twice as long to build."""

    rule: str
    hit: bool
    reason: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one message and every verdict that led to it."""

    outcome: Outcome
    policy_sha256: str
    verdicts: tuple[Verdict, ...]
    deciding_rule: str | None
    visibility: Visibility
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def rules_hit(self) -> tuple[str, ...]:
        return tuple(v.rule for v in self.verdicts if v.hit)


# --- the policy file -----------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PredicateCall(_Strict):
    """A named predicate with its parameters, e.g. `{"domain-in": {"domains": [...]}}`."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class AllOf(_Strict):
    all: list[Expr]


class AnyOf(_Strict):
    any: list[Expr]


class NotOf(_Strict):
    not_: Expr = Field(alias="not")


Expr = PredicateCall | AllOf | AnyOf | NotOf
for _combinator in (AllOf, AnyOf, NotOf):
    _combinator.model_rebuild()


MAX_EXPR_DEPTH = 12  # `not`, `all` and `any` inside one another
MAX_EXPR_NODES = 200  # predicates and combinators in one rule's `when`


def parse_expr(raw: Any) -> Expr:
    """Turn the YAML form of `when` into an expression tree.

    A bare string names a predicate without parameters; a one-key mapping is either a
    combinator (`all`, `any`, `not`) or a predicate with its parameters. An expression nests
    at most MAX_EXPR_DEPTH deep and has at most MAX_EXPR_NODES parts, so that a rule stays
    readable and deciding a message stays cheap.
    """
    return _parse(raw, depth=1)[0]


def _parse(raw: Any, *, depth: int) -> tuple[Expr, int]:
    """The expression and how many parts it has."""
    if depth > MAX_EXPR_DEPTH:
        raise ValueError(f"an expression nests at most {MAX_EXPR_DEPTH} levels deep")
    if isinstance(raw, str):
        return PredicateCall(name=raw), 1
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError("an expression is a predicate name or a mapping with exactly one key")
    ((key, value),) = raw.items()
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise ValueError(f"'{key}' takes a non-empty list of expressions")
        items: list[Expr] = []
        size = 1
        for item in value:
            expr, parts = _parse(item, depth=depth + 1)
            items.append(expr)
            size += parts
            if size > MAX_EXPR_NODES:
                raise ValueError(
                    f"an expression has at most {MAX_EXPR_NODES} predicates and combinators"
                )
        return (AllOf(all=items) if key == "all" else AnyOf(any=items)), size
    if key == "not":
        inner, parts = _parse(value, depth=depth + 1)
        return NotOf.model_validate({"not": inner}), parts + 1
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f"parameters of predicate '{key}' must be a mapping")
    return PredicateCall(name=str(key), params=value), 1


class Rule(_Strict):
    id: str
    description: str = Field(min_length=10)
    when: Expr
    outcome: Outcome
    visibility: Visibility | None = None

    @field_validator("id")
    @classmethod
    def _kebab_case(cls, value: str) -> str:
        if not RULE_ID.fullmatch(value):
            raise ValueError("rule ids are kebab-case, e.g. 'bulk-list-mail'")
        return value

    @field_validator("when", mode="before")
    @classmethod
    def _parse_when(cls, value: Any) -> Expr:
        return parse_expr(value)

    @field_validator("outcome")
    @classmethod
    def _no_reject(cls, value: Outcome) -> Outcome:
        if value is Outcome.REJECT:
            raise ValueError("'reject' is reserved for submitters who are not employees")
        return value


class Metadata(_Strict):
    name: str = Field(max_length=200)  # as long as the versions table holds them
    version: str = Field(max_length=50)
    owner: str
    contact: str
    purpose: str
    lawful_basis: str
    effective: date

    @field_validator("name", "version")
    @classmethod
    def _one_line(cls, value: str) -> str:
        """Stored beside each version (PostgreSQL takes no NUL) and shown as one line."""
        if CONTROL_CHARACTER.search(value):
            raise ValueError("one line of text, without control characters")
        return value


class Retention(_Strict):
    hold_days: int = Field(default=7, ge=1, le=90)
    decision_days: int = Field(default=730, ge=30, le=36_500)  # a century at most


class Policy(_Strict):
    metadata: Metadata
    retention: Retention = Retention()
    default_visibility: Visibility = Visibility.SHARED
    private_subject_tags: list[str] = Field(default_factory=lambda: ["[private]"])
    default_outcome: Outcome = Outcome.HOLD_FOR_REVIEW
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id '{rule.id}' is used twice")
            seen.add(rule.id)
        if self.default_outcome is Outcome.REJECT:
            raise ValueError("default_outcome cannot be 'reject'")
        return self


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy with the digest that every decision cites."""

    policy: Policy
    sha256: str
    source: str
