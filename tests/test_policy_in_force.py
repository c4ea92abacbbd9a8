"""The policy in force: one for every process sharing the database, and kept across restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, session_factory, transaction
from app.models import DecisionRecord
from app.runtime import POLICY_FOLLOW_SECONDS, active_version, policy_in_force, publish_policy
from app.security import Role
from app.settings import Settings
from policies.engine import Engine
from policies.loader import load_policy_text
from tests.conftest import add_employee, issue_token, run_service, server_url
from tests.mail import compose, send
from tests.test_policy_api import LIST_MAIL_KEPT, PLUMBING

NEWSLETTER = {"List-Id": "<deals.shop.example>", "List-Unsubscribe": "<mailto:u@shop.example>"}


def _newsletter_outcome(smtp_port: int, settings: Settings, n: int) -> tuple[str, str]:
    """Send a list mail (kept by LIST_MAIL_KEPT, dropped by PLUMBING): outcome and policy."""
    sent = compose(subject=f"Deals {n}", message_id=f"<deals-{n}@example.com>", headers=NEWSLETTER)
    assert send(smtp_port, sent)[0] == 250
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(DecisionRecord.outcome, DecisionRecord.policy_sha256)
            .order_by(DecisionRecord.id.desc())
            .limit(1)
        ).one()
    engine.dispose()
    return row.outcome, row.policy_sha256


def test_a_restart_keeps_the_policy_published_through_the_api(settings: Settings) -> None:
    kept = load_policy_text(LIST_MAIL_KEPT).policy.sha256
    with run_service(settings) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        token = issue_token(running.runtime.sessions, Role.COMPLIANCE)
        with running.client(token) as api:
            put = api.put(
                "/api/v1/policy",
                content=LIST_MAIL_KEPT.encode(),
                headers={"Content-Type": "application/yaml"},
            )
        assert put.status_code == 200, put.text

    with run_service(settings) as restarted:  # the same policy file as before
        with restarted.client(token) as api:
            in_force = api.get("/api/v1/policy").json()["sha256"]
        outcome = _newsletter_outcome(restarted.smtp_port, settings, 1)

    assert in_force == kept
    assert outcome == ("capture", kept)


def test_a_new_policy_file_is_published_when_the_service_starts(
    settings: Settings, tmp_path: Path
) -> None:
    edited = tmp_path / "edited-policy.yaml"
    edited.write_text(LIST_MAIL_KEPT)
    with run_service(settings) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        before = _newsletter_outcome(running.smtp_port, settings, 1)
    with run_service(settings.model_copy(update={"policy": edited})) as running:
        after = _newsletter_outcome(running.smtp_port, settings, 2)

    assert before == ("drop", load_policy_text(PLUMBING).policy.sha256)
    assert after == ("capture", load_policy_text(LIST_MAIL_KEPT).policy.sha256)


def test_a_policy_published_by_another_process_applies_here_within_seconds(
    settings: Settings,
) -> None:
    kept = load_policy_text(LIST_MAIL_KEPT)
    with run_service(settings) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        # What another process's PUT /api/v1/policy commits, on the shared database:
        with transaction(running.runtime.sessions) as session:
            publish_policy(session, kept)
        deadline = time.monotonic() + 5 * POLICY_FOLLOW_SECONDS
        while running.runtime.pipeline.engine.policy.sha256 != kept.policy.sha256:
            assert time.monotonic() < deadline, "the published policy never applied here"
            time.sleep(0.1)
        outcome = _newsletter_outcome(running.smtp_port, settings, 1)

    assert outcome == ("capture", kept.policy.sha256)


def test_the_version_published_last_is_in_force_whatever_the_publishers_clocks_say(
    settings: Settings,
) -> None:
    """Two processes on two hosts share the database. Host A's clock runs a minute ahead
    and it publishes the plumbing policy; then host B, whose clock is right, publishes
    another. B's version is in force, and B's own process keeps it."""
    kept = load_policy_text(LIST_MAIL_KEPT)
    right_now = datetime.now(UTC)
    with run_service(settings) as running:
        sessions = running.runtime.sessions
        with transaction(sessions) as session:
            publish_policy(
                session, load_policy_text(PLUMBING), now=right_now + timedelta(minutes=1)
            )
        with transaction(sessions) as session:
            publish_policy(session, kept, now=right_now)
        with sessions() as session:
            current = active_version(session)
            assert current is not None and current.sha256 == kept.policy.sha256
        deadline = time.monotonic() + 5 * POLICY_FOLLOW_SECONDS
        while running.runtime.pipeline.engine.policy.sha256 != kept.policy.sha256:
            assert time.monotonic() < deadline, "the version published last never applied"
            time.sleep(0.1)
        time.sleep(2 * POLICY_FOLLOW_SECONDS)  # and it stays
        assert running.runtime.pipeline.engine.policy.sha256 == kept.policy.sha256


def _until_an_insert_waits(engine: sa.Engine) -> None:
    deadline = time.monotonic() + 30
    waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    while True:
        with engine.connect() as conn:
            if conn.scalar(waiting):
                return
        assert time.monotonic() < deadline, "the second insert never waited"
        time.sleep(0.05)


def _in_force(sessions: sessionmaker[Session], policy: Engine) -> str:
    with transaction(sessions) as session:
        return policy_in_force(session, policy).policy.sha256


@pytest.mark.skipif(server_url() is None, reason="SQLite lets one writer in at a time")
def test_two_processes_starting_at_once_with_a_new_policy_file_both_start(
    database_url: str,
) -> None:
    """Two processes (two `mailroom serve` on a fresh database, an import beside a service
    after the policy file changed) both publish the file. The second's insert waits for the
    first's and then collides with it: it takes the version the first published, rather
    than failing to start."""
    kept = load_policy_text(LIST_MAIL_KEPT)
    engines = [make_engine(database_url) for _ in range(3)]  # as separate as processes'
    first, second = (session_factory(engine) for engine in engines[:2])
    try:
        with ThreadPoolExecutor(1) as pool:
            with transaction(first) as session:
                policy_in_force(session, kept)  # inserted, not committed yet
                starting = pool.submit(_in_force, second, kept)
                _until_an_insert_waits(engines[2])
            assert starting.result(timeout=30) == kept.policy.sha256
        with first() as session:
            current = active_version(session)
            assert current is not None and current.sha256 == kept.policy.sha256
    finally:
        for engine in engines:
            engine.dispose()


def _publish(sessions: sessionmaker[Session], policy: Engine, now: datetime) -> None:
    with transaction(sessions) as session:
        publish_policy(session, policy, now=now)


def _until_done_or_waiting(engine: sa.Engine, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    while not done():
        with engine.connect() as conn:
            if conn.scalar(waiting):
                return
        assert time.monotonic() < deadline, "the second publish neither ended nor waited"
        time.sleep(0.05)


@pytest.mark.skipif(server_url() is None, reason="SQLite lets one writer in at a time")
def test_of_two_publishes_at_once_the_one_committed_last_is_in_force(database_url: str) -> None:
    """Host A, whose clock is a minute behind, publishes; host B publishes meanwhile and
    its transaction ends first. A's version, published last, must be the one in force,
    as it is when the two do not overlap (README: whatever the hosts' clocks say)."""
    kept, plumbing = load_policy_text(LIST_MAIL_KEPT), load_policy_text(PLUMBING)
    right_now = datetime.now(UTC)
    engines = [make_engine(database_url) for _ in range(3)]  # as separate as processes'
    host_a, host_b = (session_factory(engine) for engine in engines[:2])
    try:
        with ThreadPoolExecutor(1) as pool:
            with transaction(host_a) as session:
                publish_policy(session, kept, now=right_now - timedelta(minutes=1))
                other = pool.submit(_publish, host_b, plumbing, right_now)
                _until_done_or_waiting(engines[2], other.done)
                b_ended_first = other.done()
            other.result(timeout=30)
        last = kept if b_ended_first else plumbing
        with host_a() as session:
            current = active_version(session)
            assert current is not None and current.sha256 == last.policy.sha256
    finally:
        for engine in engines:
            engine.dispose()


def test_a_batch_is_decided_under_the_version_in_force_in_its_transaction_with_a_writer_thread(
    settings: Settings,
) -> None:
    """README: each batch is decided under the policy in force in its own transaction, so a
    message sent after another process published is decided under the new version, not
    under the one this process held until its follow loop came round (SMTP_WRITER=thread,
    as the tests' settings have it, as well as the writer process)."""
    kept = load_policy_text(LIST_MAIL_KEPT)
    with run_service(settings) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        with transaction(running.runtime.sessions) as session:  # another process's PUT
            publish_policy(session, kept)
        outcome = _newsletter_outcome(running.smtp_port, settings, 1)

    assert outcome == ("capture", kept.policy.sha256)
