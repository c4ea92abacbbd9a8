"""Benchmark: the SMTP writer's group commit by batch size, in CPU and statements a message.

    python bench/group_commit.py [--sizes 1,4,8,16] [--messages 960]

Runs `capture.writer.commit_batch` (what the writer process runs) in this process, on an
embedded SQLite database as `mailroom serve` sets one up (the bundled policy, one employee),
with bench/smtp_ingest.py's 2 KB messages, each worked out first as the listener works it out.
For each batch size it prints the writer's CPU a message (this thread's time: the wait for
fsync is not counted) and the SQL statements run a message, BEGIN and COMMIT included.

A batch has a fixed part (BEGIN, the policy in force, the batch's lookups, the commit's WAL
write) that its messages share: the sizes' difference shows what it costs. The sizes a real
load makes are on `/metrics` as `mailroom_group_commit_batch_size` (bench/smtp_ingest.py's 20
sessions gave 6 on average on 2 cores).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

if not __package__:  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import transaction
from app.employees import add_employee
from app.ingest import submission_from, worked_out
from app.runtime import Runtime, build_runtime, follow_policy_in
from app.settings import Settings
from bench.smtp_ingest import CAPTURE, message
from capture.pipeline import Envelope
from capture.writer import Submission, commit_batch
from policies.model import Channel

ENVELOPE = Envelope(mail_from="alice@example.com", rcpt_tos=(CAPTURE,))


class Statements:
    """Counts the statements SQLite runs, on every connection the engine opens from now on."""

    def __init__(self, db: sa.Engine) -> None:
        self.count = 0
        db.dispose()  # the pool's connections were opened before the count began
        sa.event.listen(db, "connect", self._connected)

    def _connected(self, connection: sqlite3.Connection, record: Any) -> None:
        connection.set_trace_callback(self._ran)

    def _ran(self, statement: str) -> None:
        self.count += 1


def submissions(runtime: Runtime, first: int, count: int) -> list[Submission]:
    """Messages as the writer process receives them: parsed and observed by the listener."""
    capture = frozenset(runtime.settings.capture_addresses)
    envelope = tuple(getattr(ENVELOPE, name) for name in ENVELOPE.__slots__)
    made = []
    for n in range(first, first + count):
        raw = message(n, 2048)
        ahead = worked_out(raw, ENVELOPE, capture=capture)
        made.append(submission_from(raw, envelope, Channel.BCC.value, ahead))
    return made


def measure(runtime: Runtime, statements: Statements, size: int, count: int, first: int) -> str:
    batches = [
        submissions(runtime, first + start, size) for start in range(0, count - count % size, size)
    ]
    messages = sum(map(len, batches))
    ran, cpu = statements.count, time.thread_time()
    for batch in batches:
        outcomes = commit_batch(
            runtime.pipeline, batch, on_begin=lambda conn: follow_policy_in(conn, runtime.pipeline)
        )
        failed = [o for o in outcomes if isinstance(o, Exception)]
        if failed:
            raise RuntimeError(f"a batch failed: {type(failed[0]).__name__}")
    cpu = time.thread_time() - cpu
    return (
        f"batch of {size:>3}: {cpu / messages * 1000:.3f} ms CPU a message, "
        f"{(statements.count - ran) / messages:5.1f} statements a message ({messages} messages)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,8,16")
    parser.add_argument("--messages", type=int, default=960)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        # SQLite, whatever MAILROOM_DATABASE_URL says: the embedded store, and its statements
        # are what this counts.
        settings = Settings(data_dir=Path(tmp), database_url="", secret_key="bench")
        runtime = build_runtime(settings)
        try:
            with transaction(runtime.sessions) as session:
                add_employee(session, ENVELOPE.mail_from)
            statements = Statements(runtime.db)
            measure(runtime, statements, 8, 200, first=0)  # warm up: caches, contacts
            for number, size in enumerate(sizes, 1):
                print(measure(runtime, statements, size, args.messages, first=number * 100_000))
        finally:
            runtime.close()


if __name__ == "__main__":
    main()
