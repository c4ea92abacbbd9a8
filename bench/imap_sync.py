"""Benchmark: Mailroom's full IMAP sync against a raw imapclient FETCH RFC822 of the same mailbox.

    python bench/imap_sync.py [--messages 10000] [--rounds 3]

Fills a throwaway Dovecot mailbox (tests/dovecot.py) with messages from ../shared/corpora
(each made unique by a header, so receipts cannot short-cut the work), then times raw
`FETCH RFC822` of the whole mailbox in batches of 500, headers alone, and Mailroom's full
sync under the bundled policy (decided, filed, committed, into a fresh database each time).
The raw pass and the sync are measured in turn for a few rounds: the machine's other load
moves both in a round alike, and the ratio is the median round's. The last line is
`ratio=<x>`.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.db import transaction  # noqa: E402
from app.mailboxes import add_mailbox, load_config, sync_once  # noqa: E402
from app.models import Employee  # noqa: E402
from app.runtime import Runtime, build_runtime, settle_heap  # noqa: E402
from app.settings import Settings  # noqa: E402
from capture.imap import MailboxConfig, SyncStats  # noqa: E402
from tests.dovecot import PASSWORD, Dovecot, available, run_dovecot  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"
OWNER = "owner@bench.example"
USER = "bench@example.com"


def corpus() -> list[bytes]:
    folders = ["enron-categories/messages", "spamassassin/messages", "bounces/messages"]
    found = [p for f in folders for p in sorted((CORPORA / f).rglob("*")) if p.is_file()]
    return [p.read_bytes() for p in found if not p.name.endswith(".cats")]


def unique(messages: list[bytes], count: int) -> Iterator[bytes]:
    for n, raw in zip(range(count), itertools.cycle(messages), strict=False):
        yield f"X-Bench-Copy: {n}\r\n".encode() + raw.replace(b"\r\n", b"\n").replace(
            b"\n", b"\r\n"
        )


def raw_fetch(server: Dovecot, items: list[str]) -> tuple[int, float, float]:
    """Messages, wall-clock seconds and this process's CPU seconds."""
    with server.client(USER) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, len(uids), 500):
            client.fetch(uids[first : first + 500], items)
        return len(uids), time.perf_counter() - start, time.process_time() - cpu


def bench_mailbox(data: Path, host: str, port: int) -> tuple[Runtime, MailboxConfig]:
    """A fresh Mailroom on an embedded SQLite, its owner, and a mailbox on host:port; its
    heap settled as `mailroom serve` settles it once started."""
    settings = Settings(
        data_dir=data, secret_key="bench-secret-key-0123456789", org_domains=["bench.example"]
    )
    runtime = build_runtime(settings)
    with transaction(runtime.sessions) as session:
        session.add(Employee(email=OWNER, name="Bench Owner"))
    with transaction(runtime.sessions) as session:
        mailbox_id = add_mailbox(
            session,
            settings.secret(),
            employee=OWNER,
            host=host,
            port=port,
            username=USER,
            password=PASSWORD,
            folders=["INBOX"],
            tls="none",
        ).id
    with runtime.sessions() as session:
        config = load_config(session, settings.secret(), mailbox_id)
    settle_heap()
    return runtime, config


def mailroom_sync(server: Dovecot, data: Path) -> tuple[float, float, SyncStats]:
    runtime, config = bench_mailbox(data, server.host, server.port)
    start, cpu = time.perf_counter(), time.process_time()
    sync = sync_once(
        runtime.pipeline,
        config,
        max_bytes=runtime.settings.max_message_bytes,
        stop=threading.Event(),
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    runtime.close()
    return seconds, cpu, sync.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not CORPORA.is_dir():
        sys.exit(f"skipped: {CORPORA} is absent")
    if not available():
        sys.exit("skipped: dovecot is not installed (apt-get install dovecot-imapd)")
    work = Path(tempfile.mkdtemp(prefix="mailroom-bench."))
    mail = Path(tempfile.mkdtemp(prefix="mailroom-dovecot."))  # handed to the server's user
    try:
        with run_dovecot(mail) as server:
            start = time.perf_counter()
            server.append(USER, "INBOX", unique(corpus(), args.messages))
            print(f"filled: {args.messages} messages in {time.perf_counter() - start:.1f} s")
            _, headers, _ = raw_fetch(server, ["BODY.PEEK[HEADER]", "RFC822.SIZE"])
            print(f"raw FETCH headers+size: {args.messages / headers:,.0f} msg/s")
            rounds = []
            for n in range(args.rounds):
                count, raw, raw_cpu = raw_fetch(server, ["RFC822"])
                seconds, cpu, stats = mailroom_sync(server, work / f"var-{n}")
                rounds.append((raw / seconds, count, raw, raw_cpu, seconds, cpu, stats))
                print(
                    f"  round {n + 1}: raw {count / raw:,.0f} msg/s, "
                    f"mailroom {count / seconds:,.0f} msg/s, ratio {raw / seconds:.3f}"
                )
            ratio, count, raw, raw_cpu, seconds, cpu, stats = sorted(rounds, key=lambda r: r[0])[
                len(rounds) // 2
            ]
            print(
                f"raw FETCH RFC822: {count / raw:,.0f} msg/s ({count} in {raw:.1f} s; "
                f"{count / raw_cpu:,.0f} per client CPU second)"
            )
            print(
                f"mailroom full sync: {count / seconds:,.0f} msg/s ({count} in {seconds:.1f} s; "
                f"{count / cpu:,.0f} per CPU second)"
            )
            print(f"  outcomes: {stats.outcomes}")
            print(
                f"  decided on headers alone, body never fetched: {stats.bodies_skipped}; "
                f"bodies fetched: {stats.bodies_fetched}, over the size cap: {stats.over_cap}"
            )
            print(
                "  bodies downloaded for mail then dropped (a rule that reads the text decided): "
                f"{stats.bodies_for_dropped}"
            )
            print(f"ratio {ratio:.3f} (the median round's)")
            print(f"ratio={ratio:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(mail, ignore_errors=True)


if __name__ == "__main__":
    main()
