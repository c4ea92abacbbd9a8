"""SpamAssassin's spamd, where configured, scores each message before the policy decides."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.models import DecisionRecord
from app.security import Role
from app.settings import BUNDLED_POLICY, Settings
from tests.conftest import Running, add_employee, issue_token, run_service
from tests.mail import compose, send

SPAMD = Path("/usr/sbin/spamd")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real spamd on a loopback port, local tests only (no network)."""
    if not SPAMD.exists():
        pytest.skip("spamd is not installed (.ci/run installs Debian's spamd)")
    folder = tmp_path_factory.mktemp("spamd")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    user = ["-u", "nobody", "-g", "nogroup"] if os.geteuid() == 0 else []
    log = (folder / "spamd.log").open("wb")
    proc = subprocess.Popen(
        [
            str(SPAMD),
            *user,
            "--local",
            f"--listen=127.0.0.1:{port}",
            "--max-children=1",
            "--syslog=stderr",
            "--nouser-config",
            "--allowed-ips=127.0.0.1",
            f"--pidfile={folder / 'spamd.pid'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    until = time.monotonic() + 60
    while time.monotonic() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture
def scored(settings: Settings, spamd: int) -> Iterator[Running]:
    with_spamd = settings.model_copy(
        update={"policy": BUNDLED_POLICY, "spamd_host": "127.0.0.1", "spamd_port": spamd}
    )
    with run_service(with_spamd) as service:
        add_employee(service.runtime.sessions, "alice@example.com")
        yield service


def test_a_message_spamd_scores_as_spam_is_dropped_by_the_published_policy(
    scored: Running,
) -> None:
    assert send(scored.smtp_port, compose(body=f"{GTUBE}\n"))[0] == 250

    with scored.runtime.sessions() as session:
        record = session.scalars(sa.select(DecisionRecord)).one()
    assert (record.outcome, record.rules) == ("drop", ["upstream-spam"])
    assert record.facts["spamd_score"] >= 1000


def test_an_ordinary_message_gets_a_low_score_and_goes_on_to_the_rules(scored: Running) -> None:
    assert send(scored.smtp_port, compose())[0] == 250

    with scored.runtime.sessions() as session:
        record = session.scalars(sa.select(DecisionRecord)).one()
    assert record.facts["spamd_score"] < 5.0
    assert "upstream-spam" not in record.rules


def test_explain_asks_spamd_as_the_listener_does(scored: Running) -> None:
    """The listener drops a message spamd scores as spam: explaining it must say so, not
    that it would be kept."""
    raw = compose(body=f"{GTUBE}\n", message_id="<gtube-explained@customer.example>")
    token = issue_token(scored.runtime.sessions, Role.COMPLIANCE)
    with scored.client(token) as api:
        explained = api.post(
            "/api/v1/explain",
            content=raw.as_bytes(),
            params={"employee": "alice@example.com"},
            headers={"Content-Type": "message/rfc822"},
        ).json()
    assert send(scored.smtp_port, raw)[0] == 250
    with scored.runtime.sessions() as session:
        record = session.scalars(sa.select(DecisionRecord)).one()

    assert (explained["outcome"], explained["rules"]) == (record.outcome, record.rules)
    assert explained["facts"]["spamd_score"] == record.facts["spamd_score"]


def test_a_threshold_with_many_decimals_decides_a_high_score_rather_than_failing_it(
    settings: Settings, spamd: int, tmp_path: Path
) -> None:
    """The policy validates, so the listener applies it: the reason's figure is cut to the
    threshold's 25 decimals, which a score of 1000 and more takes 29 digits to write."""
    policy = tmp_path / "fine-threshold.yaml"
    policy.write_text(
        BUNDLED_POLICY.read_text().replace("above: 5.0}", "above: 0.0000000000000000000000001}")
    )
    with_spamd = settings.model_copy(
        update={"policy": policy, "spamd_host": "127.0.0.1", "spamd_port": spamd}
    )
    with run_service(with_spamd) as service:
        add_employee(service.runtime.sessions, "alice@example.com")

        assert send(service.smtp_port, compose(body=f"{GTUBE}\n"))[0] == 250

        with service.runtime.sessions() as session:
            record = session.scalars(sa.select(DecisionRecord)).one()
    assert (record.outcome, record.rules) == ("drop", ["upstream-spam"])
