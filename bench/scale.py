"""Benchmark: SMTP ingest with 1 and 2 `mailroom serve` processes on one PostgreSQL, and the
database round-trips each message costs.

    python bench/scale.py [--messages 2000] [--sessions 20] [--size 2048]

PostgreSQL is MAILROOM_TEST_POSTGRES_URL, else a throwaway cluster from scripts/pg-cluster with
pg_stat_statements loaded. Each run gets a fresh database; the client is bench/smtp_ingest.py's
(its sessions split evenly over the processes). Statements per message come from
pg_stat_statements (every statement the server executed, BEGIN/COMMIT/SAVEPOINT included: one
round-trip each), transactions and rows from pg_stat_database over the servers' whole life.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

if not __package__:  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import migrate
from bench.smtp_ingest import Run, descendants, drive, free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent
PG_CLUSTER = ROOT / "scripts" / "pg-cluster"
STAT_STATEMENTS = "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.max=1000"


@dataclass(frozen=True)
class Counters:
    transactions: int
    rows_written: int  # inserted + updated + deleted
    rows_read: int  # returned + fetched


@dataclass(frozen=True)
class Result:
    processes: int
    run: Run
    statements: int | None  # during the measured run; None without pg_stat_statements
    db_ms: float  # the server's execution time of those statements
    top: list[tuple[int, float, str]]  # calls, total ms, statement
    counters: Counters  # over the servers' life, warm-up included
    counted_messages: int  # the messages those counters cover
    server_cpu: float  # seconds of CPU the Mailroom processes used during the measured run
    seq_scans: list[tuple[str, int, int]]  # table, sequential scans, rows they read (life)


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server URL: the one named in the environment, or a throwaway cluster."""
    named = os.environ.get("MAILROOM_TEST_POSTGRES_URL")
    if named:
        yield named
        return
    with tempfile.TemporaryDirectory(prefix="mailroom-bench-pg.") as tmp:
        env = os.environ | {"PG_CLUSTER_OPTIONS": STAT_STATEMENTS}
        started = subprocess.run(
            [str(PG_CLUSTER), "start", tmp], env=env, check=True, capture_output=True, text=True
        )
        try:
            yield started.stdout.strip()
        finally:
            subprocess.run([str(PG_CLUSTER), "stop", tmp], check=False)


@contextmanager
def fresh_database(admin: sa.Engine) -> Iterator[str]:
    name = f"mailroom_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def stat_statements(admin: sa.Engine) -> bool:
    """Whether pg_stat_statements can be read (it must be preloaded by the server)."""
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            conn.execute(sa.text("SELECT count(*) FROM pg_stat_statements"))
    except sa.exc.DBAPIError:
        return False
    return True


def statements(
    admin: sa.Engine, database: str, *, top: int = 0
) -> tuple[int, float, list[tuple[int, float, str]]]:
    """Statements executed in the database, their execution time, and the costliest ones."""
    where = "dbid = (SELECT oid FROM pg_database WHERE datname = :db)"
    with admin.connect() as conn:
        calls, ms = conn.execute(
            sa.text(
                "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) "
                f"FROM pg_stat_statements WHERE {where}"
            ),
            {"db": database},
        ).one()
        rows = conn.execute(
            sa.text(
                f"SELECT calls, total_exec_time, query FROM pg_stat_statements WHERE {where} "
                "ORDER BY total_exec_time DESC LIMIT :top"
            ),
            {"db": database, "top": top},
        )
        costly = [(int(c), float(t), " ".join(str(q).split())) for c, t, q in rows]
        return int(calls), float(ms), costly


def seq_scans(url: str) -> list[tuple[str, int, int]]:
    """Tables read by sequential scans, the rows those scans read (what tup_returned counts)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT relname, seq_scan, seq_tup_read FROM pg_stat_user_tables "
                "WHERE seq_tup_read > 0 ORDER BY seq_tup_read DESC LIMIT 4"
            )
        )
        found = [(str(t), int(n), int(r)) for t, n, r in rows]
    engine.dispose()
    return found


def reset_statements(admin: sa.Engine) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_statements_reset()"))


def counters(admin: sa.Engine, database: str) -> Counters:
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        row = conn.execute(
            sa.text(
                "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted, "
                "tup_returned + tup_fetched FROM pg_stat_database WHERE datname = :db"
            ),
            {"db": database},
        ).one()
    return Counters(int(row[0]), int(row[1]), int(row[2]))


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User plus system CPU time of these processes and their writer processes so far
    (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in (p for proc in procs for p in descendants(proc.pid)):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def mailroom_env(url: str, data_dir: Path, port: int) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")} | {
        "MAILROOM_DATABASE_URL": url,
        "MAILROOM_DATA_DIR": str(data_dir),
        "MAILROOM_SMTP_PORT": str(port),
        "MAILROOM_API_PORT": "0",
        "MAILROOM_SECRET_KEY": "bench",
        "MAILROOM_AUTO_MIGRATE": "false",
    }


def serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [mailroom(), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )


def mailroom() -> str:
    return shutil.which("mailroom") or str(Path(sys.executable).parent / "mailroom")


async def drive_all(ports: list[int], count: int, sessions: int, size: int) -> Run:
    """The same load as smtp_ingest.drive, its sessions split evenly over the processes."""
    started, cpu = time.perf_counter(), time.process_time()
    runs = await asyncio.gather(
        *(drive(port, count // len(ports), sessions // len(ports), size) for port in ports)
    )
    latencies = [latency for run in runs for latency in run.latencies]
    seconds = time.perf_counter() - started
    return Run(sum(run.messages for run in runs), seconds, latencies, time.process_time() - cpu)


def measure(server: str, processes: int, args: argparse.Namespace) -> Result:
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    have_statements = stat_statements(admin)
    warm_up = min(200, args.messages)
    with fresh_database(admin) as name, tempfile.TemporaryDirectory() as tmp:
        url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
        migrate(url)
        ports = [free_port() for _ in range(processes)]
        envs = [mailroom_env(url, Path(tmp) / f"p{i}", port) for i, port in enumerate(ports)]
        subprocess.run([mailroom(), "employees", "add", "alice@example.com"], env=envs[0],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        before = counters(admin, name)
        logs = [Path(tmp) / f"serve-{i}.log" for i in range(processes)]
        procs = [serve(env, log) for env, log in zip(envs, logs, strict=True)]
        try:
            for port, log in zip(ports, logs, strict=True):
                try:
                    wait_listening(port)
                except RuntimeError:
                    sys.exit(f"mailroom serve did not start:\n{log.read_text()[-2000:]}")
            asyncio.run(drive_all(ports, warm_up, args.sessions, args.size))
            if have_statements:
                reset_statements(admin)
            cpu = cpu_seconds(procs)
            run = asyncio.run(drive_all(ports, args.messages, args.sessions, args.size))
            cpu = cpu_seconds(procs) - cpu
            total, db_ms, top = (
                statements(admin, name, top=4) if have_statements else (None, 0.0, [])
            )
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=60)
        after = counters(admin, name)  # the servers have exited: their statistics are flushed
        scans = seq_scans(url)
    admin.dispose()
    spent = Counters(
        *(a - b for a, b in zip(vars(after).values(), vars(before).values(), strict=True))
    )
    return Result(processes, run, total, db_ms, top, spent, warm_up + run.messages, cpu, scans)


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"{args.size // 1024} KB x {args.messages}, {args.sessions} sessions, "
          f"{os.cpu_count()} cores shared by client, servers and PostgreSQL")  # fmt: skip
    for r in results:
        per = r.counted_messages
        stmts = f"{r.statements / r.run.messages:5.1f}" if r.statements is not None else "  n/a"
        print(
            f"  {r.processes} process{'es' if r.processes > 1 else '  '} {r.run.rate:7.0f} msg/s"
            f"   time-to-250 p50 {r.run.percentile(0.5):6.1f} ms  p99 {r.run.percentile(0.99):6.1f}"
            f" ms   statements/msg {stmts} ({r.db_ms / r.run.messages:.2f} ms)"
            f"   transactions/msg {r.counters.transactions / per:.2f}"
            f"   rows written/msg {r.counters.rows_written / per:.1f}"
            f"   rows read/msg {r.counters.rows_read / per:.1f}"
            f"   server CPU/msg {r.server_cpu / r.run.messages * 1000:.1f} ms"
        )
    for r in results:
        if r.top:
            print(f"  costliest statements ({r.processes} process): calls and ms per message")
        for calls, ms, query in r.top:
            n = r.run.messages
            print(f"    {calls / n:5.2f} {ms / n:6.3f} ms  {query[:100]}")
    for r in results:
        per = r.counted_messages
        scans = ", ".join(
            f"{t} {n / per:.2f} scans {rows / per:.0f} rows" for t, n, rows in r.seq_scans
        )
        print(f"  sequential scans per message ({r.processes} process): {scans or 'none'}")
    if len(results) == 2:
        print(f"scale={results[1].run.rate / results[0].run.rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    with postgres() as server:
        results = [measure(server, n, args) for n in (1, 2)]
    report(results, args)


if __name__ == "__main__":
    main()
