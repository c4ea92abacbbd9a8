"""Decide: read a policy file, validate every part of it, and name what is wrong."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies.engine import Engine, PolicyError, compile_rule
from policies.model import LoadedPolicy, Policy, Rule

MAX_YAML_DEPTH = 64  # far deeper than any expression may nest (model.MAX_EXPR_DEPTH)


class PolicyYamlLoader(yaml.SafeLoader):
    """Safe YAML without anchors or aliases, nested at most MAX_YAML_DEPTH deep: a kilobyte
    of aliases can stand for millions of nodes, and deep nesting exhausts the recursion."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        line = f"line {event.start_mark.line + 1}" if event.start_mark else "policy"
        if isinstance(event, yaml.NodeEvent) and (
            isinstance(event, yaml.AliasEvent) or event.anchor is not None
        ):
            raise PolicyError([f"{line}: a policy may not use YAML anchors or aliases"])
        if self._depth >= MAX_YAML_DEPTH:
            raise PolicyError([f"{line}: a policy nests at most {MAX_YAML_DEPTH} levels deep"])
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys are all different: YAML readers keep the last of two equal
        keys, so the policy applied would not be the one people read."""
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # refused by the constructor below, which says why
            if key in seen:
                line = key_node.start_mark.line + 1
                raise PolicyError([f"line {line}: '{key}' is given twice"])
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(source: str) -> Any:
    """The policy's YAML as plain data; PolicyError if it is not YAML a policy may use."""
    loader: PolicyYamlLoader | None = None
    try:
        loader = PolicyYamlLoader(source)  # its reader refuses NUL, ESC and kin at once
        return loader.get_single_data()
    except PolicyError:  # refused by PolicyYamlLoader, already saying why
        raise
    except yaml.YAMLError as error:
        raise PolicyError([f"not valid YAML: {error}"]) from error
    except ValueError as error:  # 2024-02-30, or an integer of more than 4300 digits
        raise PolicyError([f"a number or date cannot be read: {error}"]) from error
    finally:
        if loader is not None:
            loader.dispose()


def load_policy_text(source: str) -> Engine:
    """Parse, validate and compile a policy; raise PolicyError naming every problem."""
    raw = parse_yaml(source)
    if not isinstance(raw, dict):
        raise PolicyError(["a policy is a YAML mapping with metadata and rules"])
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as error:
        problems = [_describe(issue, raw) for issue in error.errors()]
        raise PolicyError(problems + _rule_problems(raw)) from error
    digest = hashlib.sha256(source.encode()).hexdigest()
    return Engine.build(LoadedPolicy(policy=policy, sha256=digest, source=source))


def load_policy(path: Path) -> Engine:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        raise PolicyError([f"cannot read {path}: {error}"]) from error
    return load_policy_text(source)


def _rule_problems(raw: dict[str, Any]) -> list[str]:
    """Predicate problems in the rules that are well-formed, so that one pass names them all."""
    problems: list[str] = []
    rules = raw.get("rules")
    for item in rules if isinstance(rules, list) else []:
        try:
            rule = Rule.model_validate(item)
        except ValidationError:
            continue  # already described by the policy-level validation
        compile_rule(rule, problems)
    return problems


def _describe(issue: Any, raw: dict[str, Any]) -> str:
    """'rule 'bulk-list-mail': outcome: Input should be ...' rather than 'rules.3.outcome'."""
    loc = list(issue["loc"])
    where = ".".join(str(part) for part in loc) or "policy"
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = raw.get("rules") or []
        rule = rules[loc[1]] if loc[1] < len(rules) else None
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        field = ".".join(str(part) for part in loc[2:]) or "rule"
        where = f"rule '{rule_id or '#' + str(loc[1] + 1)}': {field}"
    return f"{where}: {issue['msg']}"
