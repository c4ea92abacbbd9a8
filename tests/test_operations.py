"""Operations: /healthz, /readyz and /metrics over HTTP while mail goes through the listener."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app.db import make_engine
from app.server import ProcessRole
from app.settings import Settings
from tests.conftest import Running, add_employee, run_service
from tests.mail import compose, send


def _samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def _label(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def test_metrics_count_messages_replies_and_commits_without_message_labels(
    running: Running,
) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    captured = compose(message_id="<ops-capture@example.com>")
    internal = compose(to="Carol <carol@example.com>", message_id="<ops-internal@example.com>")
    stranger = compose(sender="Mallory <mallory@elsewhere.example>", message_id="<ops-x@e.x>")
    assert send(running.smtp_port, captured)[0] == 250
    assert send(running.smtp_port, internal)[0] == 250
    assert send(running.smtp_port, stranger, mail_from="mallory@elsewhere.example")[0] == 550
    assert send(running.smtp_port, captured, rcpt="someone@example.com")[0] == 550
    assert send(running.smtp_port, captured)[0] == 250  # a retry, answered from its receipt

    with running.client(None) as client:
        samples = _samples(client)
        text = client.get("/metrics").text

    messages = "mailroom_messages_total"
    assert samples[(messages, _label(channel="smtp", outcome="capture",
                    rule="external-business-correspondent"))] == 1  # fmt: skip
    assert samples[(messages, _label(channel="smtp", outcome="drop", rule="internal-only"))] == 1
    assert samples[(messages, _label(channel="smtp", outcome="reject",
                    rule="submitter-not-employee"))] == 1  # fmt: skip
    assert samples[("mailroom_smtp_refusals_total", _label(code="550"))] == 2
    assert samples[("mailroom_retries_recognised_total", _label(channel="smtp"))] == 1
    assert samples[("mailroom_smtp_sessions_total", _label())] == 5
    assert samples[("mailroom_smtp_time_to_reply_seconds_count", _label(code="250"))] == 3
    assert samples[("mailroom_smtp_time_to_reply_seconds_count", _label(code="550"))] == 1
    assert samples[("mailroom_group_commit_batch_size_count", _label())] >= 1
    assert samples[("mailroom_group_commit_batch_size_sum", _label())] == 4
    assert samples[("mailroom_writer_queue_depth", _label())] == 0
    for leak in ("alice", "carol", "mallory", "example", "Quote", "ops-"):
        assert leak not in text, f"a metric carries message-derived text: {leak}"


def test_health_and_readiness_over_http(running: Running) -> None:
    with running.client(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = {"database": True, "smtp": True, "smtp-writer": True, "disk-space": True}
    assert ready.json() == {"status": "ready", "checks": checks}


def test_readiness_fails_when_the_smtp_listener_is_closed(running: Running) -> None:
    server = running.service.smtp_server
    assert server is not None
    running.loop.call_soon_threadsafe(server.close)
    with running.client(None) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    checks = {"database": True, "smtp": False, "smtp-writer": True, "disk-space": True}
    assert ready.json() == {"status": "not ready", "checks": checks}


def test_an_smtp_only_process_serves_operations_endpoints_but_not_the_api(
    settings: Settings,
) -> None:
    service_roles = frozenset({ProcessRole.SMTP})
    with run_service(settings, roles=service_roles) as smtp_only:
        add_employee(smtp_only.runtime.sessions, "alice@example.com")
        assert send(smtp_only.smtp_port, compose())[0] == 250
        with smtp_only.client(None) as client:
            assert client.get("/readyz").status_code == 200
            assert client.get("/api/v1/policy").status_code == 404
            assert _samples(client)[("mailroom_smtp_sessions_total", _label())] == 1


def test_an_api_only_process_has_no_smtp_listener(settings: Settings) -> None:
    with run_service(settings, roles=frozenset({ProcessRole.API})) as api_only:
        assert api_only.service.smtp_server is None
        assert api_only.service.smtp_port == 0
        with api_only.client(None) as client:
            assert client.get("/readyz").json()["checks"] == {"database": True}
            assert client.get("/api/v1/policy").status_code == 401


def test_readiness_fails_while_the_database_is_unreachable(running: Running) -> None:
    reachable = running.runtime.db
    running.runtime.db = make_engine(f"sqlite:///{running.runtime.settings.data_dir}/gone/x.db")
    try:
        with running.client(None) as client:
            ready = client.get("/readyz")
            alive = client.get("/healthz")
    finally:
        running.runtime.db.dispose()
        running.runtime.db = reachable
    assert ready.status_code == 503
    checks = {"database": False, "smtp": True, "smtp-writer": True, "disk-space": True}
    assert ready.json() == {"status": "not ready", "checks": checks}
    assert alive.status_code == 200, "alive all the same: a restart would not bring the database"


def test_readiness_answers_at_once_while_a_long_write_holds_sqlite(running: Running) -> None:
    """Readiness only reads, and SQLite's readers do not wait for its writer. The probe took
    the write lock, so while a long write held it (a retention purge, an import) /readyz
    waited up to the 30 s busy timeout: health checks timed out on a healthy process."""
    if running.runtime.db.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's reads never wait for a writer's lock")
    with running.runtime.db.connect() as writer:
        writer.execute(sa.text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock, until rollback
        with running.client(None) as client:
            ready = client.get("/readyz", timeout=5)
        writer.rollback()
    assert ready.status_code == 200, ready.text


def test_readiness_fails_while_low_disk_space_defers_every_message(settings: Settings) -> None:
    """Under MAILROOM_MIN_FREE_BYTES the listener answers every MAIL FROM 452, as it answers
    every message 451 without its writer: a balancer must send that process no mail."""
    low = settings.model_copy(update={"min_free_bytes": 10**18})
    with run_service(low) as running, running.client(None) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    checks = {"database": True, "smtp": True, "smtp-writer": True, "disk-space": False}
    assert ready.json() == {"status": "not ready", "checks": checks}


def test_a_new_sqlite_database_is_readable_by_its_owner_alone(
    settings: Settings, tmp_path: Path
) -> None:
    """Held messages wait in it with their text. The data directory is made 0700 only when
    Mailroom makes it: in one made beforehand (the Docker image's is 0755), the database and
    its write-ahead log were created 0644, readable by every local user."""
    data_dir = tmp_path / "made-by-the-operator"
    data_dir.mkdir(mode=0o755)
    umask = os.umask(0o022)
    try:
        fresh = settings.model_copy(update={"data_dir": data_dir, "database_url": ""})
        with run_service(fresh) as running:
            add_employee(running.runtime.sessions, "alice@example.com")
            files = sorted(p.name for p in data_dir.glob("mailroom.db*"))
            modes = {p.name: p.stat().st_mode & 0o777 for p in data_dir.glob("mailroom.db*")}
    finally:
        os.umask(umask)
    assert files == ["mailroom.db", "mailroom.db-shm", "mailroom.db-wal"]
    assert modes == dict.fromkeys(files, 0o600)
