"""Scheduled jobs run one at a time across every process sharing the database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from app.db import make_engine
from app.jobs import Job, Run, lock_key, run_forever, run_once
from app.metrics import Metrics
from tests.conftest import server_url

on_postgres = pytest.mark.skipif(
    server_url() is None, reason="advisory locks need PostgreSQL (MAILROOM_TEST_DATABASE_URL)"
)


@pytest.fixture
def engines(database_url: str) -> Iterator[list[sa.Engine]]:
    """Two engines: their connections are as separate as two processes' would be."""
    made = [make_engine(database_url) for _ in range(2)]
    yield made
    for engine in made:
        engine.dispose()


def test_on_sqlite_a_job_simply_runs(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the SQLite case")
    engine = make_engine(database_url)
    assert run_once(engine, Job("test-job", every=60, work=lambda: 1)) is Run.RAN
    engine.dispose()


def test_a_cancelled_job_ends_only_after_the_run_in_hand(engines: list[sa.Engine]) -> None:
    """A service's stop cancels its jobs, then closes the database: a run still going on in
    its thread would use the closed engine (a connection left open, or the run failing)."""
    engine = engines[0]
    entered = threading.Event()
    finished: list[int] = []

    def work() -> int:
        entered.set()
        time.sleep(0.2)  # the stop comes now
        with engine.connect() as conn:
            finished.append(conn.scalar(sa.select(sa.literal(1))) or 0)
        return 0

    async def cancel_mid_run() -> list[int]:
        job = asyncio.create_task(run_forever(engine, Job("slow", every=60, work=work), Metrics()))
        assert await asyncio.to_thread(entered.wait, 30)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        return list(finished)  # what the run had done when the cancelled job ended

    assert asyncio.run(cancel_mid_run()) == [1]


@on_postgres
def test_a_job_running_in_one_process_is_skipped_by_another(engines: list[sa.Engine]) -> None:
    first, second = engines
    entered, release = threading.Event(), threading.Event()
    second_ran: list[int] = []

    def record(n: int) -> int:
        second_ran.append(n)
        return 1

    def hold() -> int:
        entered.set()
        assert release.wait(30)
        return 0

    holder_result: list[Run] = []
    holder = threading.Thread(
        target=lambda: holder_result.append(run_once(first, Job("test-job", every=60, work=hold)))
    )
    holder.start()
    assert entered.wait(30)
    try:
        meanwhile = run_once(second, Job("test-job", every=60, work=lambda: record(1)))
        other_job = run_once(second, Job("other-job", every=60, work=lambda: 1))
    finally:
        release.set()
        holder.join(30)
    afterwards = run_once(second, Job("test-job", every=60, work=lambda: record(2)))

    assert (holder_result, meanwhile, other_job) == ([Run.RAN], Run.SKIPPED, Run.RAN)
    assert (afterwards, second_ran) == (Run.RAN, [2])


@on_postgres
def test_runners_hammering_one_job_never_overlap(database_url: str) -> None:
    active, most, ran = 0, 0, 0
    guard = threading.Lock()

    def work() -> int:
        nonlocal active, most, ran
        with guard:
            active += 1
            most = max(most, active)
            ran += 1
        time.sleep(0.005)  # widen the window in which a second runner could slip in
        with guard:
            active -= 1
        return 0

    def runner() -> None:
        engine = make_engine(database_url)
        for _ in range(25):
            run_once(engine, Job("hammered", every=60, work=work))
        engine.dispose()

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert most == 1
    assert ran >= 1


HOLD_AND_SLEEP = """
import sys, time, sqlalchemy as sa
engine = sa.create_engine(sys.argv[1])
conn = engine.connect()
conn.execute(sa.select(sa.func.pg_advisory_lock(int(sys.argv[2]))))
conn.commit()
print("held", flush=True)
time.sleep(600)
"""


@on_postgres
def test_the_lock_of_a_killed_process_is_released(
    database_url: str, engines: list[sa.Engine]
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_SLEEP, database_url, str(lock_key("test-job"))],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert run_once(engines[0], Job("test-job", every=60, work=lambda: 1)) is Run.SKIPPED
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    # The server ends the dead client's session (and its locks) once it sees the socket close.
    deadline = time.monotonic() + 30
    result = Run.SKIPPED
    while result is Run.SKIPPED and time.monotonic() < deadline:
        time.sleep(0.05)
        result = run_once(engines[0], Job("test-job", every=60, work=lambda: 1))
    assert result is Run.RAN
