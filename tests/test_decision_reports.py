"""The decision log as compliance reads it: filtered, and counted per rule, day and employee."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from app import ledger
from app.db import transaction
from app.policy_versions import simulate
from app.security import Role
from app.web import reports
from policies.model import Channel, Decision, Outcome, Verdict, Visibility
from tests.conftest import TEST_SECRET, Running, add_employee, issue_token
from tests.mail import compose, send


@dataclass(frozen=True)
class Decided:
    alice: int
    bob: int
    officer: str
    alice_token: str


@pytest.fixture
def decided(running: Running) -> Decided:
    """Alice: two captures and a dropped internal mail; Bob: one newsletter; one erasure."""
    sessions = running.runtime.sessions
    alice = add_employee(sessions, "alice@example.com")
    bob = add_employee(sessions, "bob@example.com")
    for n in (1, 2):
        assert send(running.smtp_port, compose(message_id=f"<c{n}@example.com>"))[0] == 250
    internal = compose(to="Bob <bob@example.com>", message_id="<i@example.com>")
    newsletter = compose(
        sender="Bob <bob@example.com>",
        headers={"List-Id": "<news.customer.example>"},
        message_id="<l@example.com>",
    )
    assert send(running.smtp_port, internal)[0] == 250
    assert send(running.smtp_port, newsletter, mail_from="bob@example.com")[0] == 250
    officer = issue_token(sessions, Role.COMPLIANCE)
    with running.client(officer) as api:
        assert api.post("/api/v1/erasures", json={"address": "x@gone.example"}).is_success
    return Decided(alice, bob, officer, issue_token(sessions, Role.EMPLOYEE, employee_id=alice))


def test_compliance_filters_decisions_by_rule_outcome_employee_and_time(
    running: Running, decided: Decided
) -> None:
    def outcomes(**params: str | int) -> list[tuple[str, list[str]]]:
        with running.client(decided.officer) as api:
            page = api.get("/api/v1/decisions", params=params)
        assert page.status_code == 200, page.text
        return [(d["outcome"], d["rules"]) for d in page.json()["items"]]

    everything = outcomes()
    by_rule = outcomes(rule="bulk-list-mail")
    drops = outcomes(outcome="drop")
    alices = outcomes(employee_id=decided.alice)
    future = outcomes(since=(datetime.now(UTC) + timedelta(days=1)).isoformat())

    assert len(everything) == 4, "the erasure is an action in the log, not a decision"
    assert by_rule == [("drop", ["bulk-list-mail"])]
    assert drops == [("drop", ["bulk-list-mail"]), ("drop", ["internal-only"])]
    assert alices == [
        ("drop", ["internal-only"]),
        ("capture", ["external-business-correspondent"]),
        ("capture", ["external-business-correspondent"]),
    ]
    assert future == []


def test_aggregates_count_per_rule_per_day_and_per_employee(
    running: Running, decided: Decided
) -> None:
    with running.client(decided.officer) as api:
        report = api.get("/api/v1/decisions/aggregates").json()
        too_long = api.get(
            "/api/v1/decisions/aggregates",
            params={"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        )
    with running.client(decided.alice_token) as api:
        own = api.get("/api/v1/decisions/aggregates").json()

    today = datetime.now(UTC).date().isoformat()
    assert report["decisions"] == 4
    assert {(r["day"], r["rule"], r["outcome"], r["count"]) for r in report["by_rule_per_day"]} == {
        (today, "external-business-correspondent", "capture", 2),
        (today, "internal-only", "drop", 1),
        (today, "bulk-list-mail", "drop", 1),
    }
    assert {(e["employee_id"], e["outcome"], e["count"]) for e in report["by_employee"]} == {
        (decided.alice, "capture", 2),
        (decided.alice, "drop", 1),
        (decided.bob, "drop", 1),
    }
    assert too_long.status_code == 422
    assert own["decisions"] == 3
    assert {e["employee_id"] for e in own["by_employee"]} == {decided.alice}


def test_simulate_replays_decisions_and_skips_logged_actions(
    running: Running, decided: Decided
) -> None:
    with running.runtime.sessions() as session:
        result = simulate(session, running.runtime.pipeline.engine, TEST_SECRET.encode())
    assert (result.evaluated, result.changed, result.not_replayable) == (4, 0, 0)


def test_the_compliance_page_counts_per_rule_the_decisions_its_chart_counts(
    running: Running, decided: Decided
) -> None:
    """A decision dated ahead of this host's clock (another host's runs fast) is on none of
    the chart's days; the table per deciding rule beside it must not count it either."""
    ahead = datetime.now(UTC) + timedelta(days=2)
    decision = Decision(
        outcome=Outcome.DROP,
        policy_sha256=running.runtime.pipeline.engine.policy.sha256,
        verdicts=(Verdict("internal-only", True, "only colleagues"),),
        deciding_rule="internal-only",
        visibility=Visibility.SHARED,
    )
    with transaction(running.runtime.sessions) as session:
        ledger.append(session, ledger.Entry(ahead, Channel.BCC, decided.alice, decision, None))

    with running.runtime.sessions() as session:
        shown = reports.activity(session, datetime.now(UTC))

    charted = sum(sum(day.values()) for day in shown.per_day.values())
    assert charted == sum(shown.per_rule.values()) == 4
