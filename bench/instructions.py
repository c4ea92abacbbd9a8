"""Benchmark: CPU instructions per message of a mailbox sync, counted by callgrind.

    python bench/instructions.py [--messages 1000]

Wall-clock rates on these shared machines swing by a fifth for the same code, so a change
worth 2 % cannot be seen in them. This counts instructions instead, which do not swing: the
same decide-file-record work as `bench/imap_sync.py` (FolderSync under the bundled policy, on
an embedded SQLite), with the IMAP server replaced by messages held in memory so that only
Mailroom's own work is counted. The messages are every tenth of bench/imap_sync.py's 10,000,
so the mix is the same. Header sections are parsed in this process, not in the sync's helper
process (which callgrind would not follow): the count is all the work, wherever it runs.
Needs valgrind and gcc (`apt-get install valgrind gcc`); the count is taken around
`sync_all` only, not imports or setup. The last line is `instructions=<M>` (millions per
message).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.imap_sync import CORPORA, bench_mailbox, corpus, unique  # noqa: E402
from capture import header_helper  # noqa: E402
from capture.header_helper import Parsed  # noqa: E402
from capture.imap import FolderSync  # noqa: E402

TOGGLE = """#include <valgrind/callgrind.h>
void counting(int on) {
    if (on) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
    else { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_STOP_INSTRUMENTATION; }
}
void collecting(void) { CALLGRIND_TOGGLE_COLLECT; } /* this thread's count, on or off */
"""


class HeldMailbox:
    """The few IMAP calls FolderSync makes, answered from messages in memory."""

    normalise_times = True
    folder_encode = True  # set and reset around LIST, as on IMAPClient

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = {uid: raw for uid, raw in enumerate(messages, start=1)}
        self._imap = self  # header sections are fetched through imaplib (header_fetch)

    def uid(self, command: str, message_set: str, request: str) -> tuple[str, list[Any]]:
        """imaplib's answer to `UID FETCH set (BODY.PEEK[HEADER]<0.n> RFC822.SIZE)`, in
        the form Dovecot writes it."""
        limit = int(request.split("<0.")[1].split(">")[0])
        data: list[Any] = []
        for seq, uid in enumerate((int(u) for u in message_set.split(",")), start=1):
            raw = self.messages[uid]
            header = _header_section(raw)[:limit]
            sizes = (seq, uid, len(raw), len(header))
            line = b"%d (UID %d RFC822.SIZE %d BODY[HEADER]<0> {%d}" % sizes
            data += [(line, header), b")"]
        return "OK", data

    def list_folders(self) -> list[tuple[tuple[bytes, ...], bytes, str]]:
        return []  # no folder flagged \Sent: the configured ones are read as they are named

    def select_folder(self, folder: str, readonly: bool = True) -> dict[bytes, Any]:
        return {b"UIDVALIDITY": 1}

    def search(self, criteria: list[Any]) -> list[int]:
        return list(self.messages)

    def fetch(self, uids: list[int], items: list[str]) -> dict[int, dict[bytes, Any]]:
        if "BODY.PEEK[]" in items:
            return {uid: {b"BODY[]": self.messages[uid]} for uid in uids}
        return {
            uid: {b"BODY[HEADER]": _header_section(raw), b"RFC822.SIZE": len(raw)}
            for uid, raw in ((uid, self.messages[uid]) for uid in uids)
        }


def _header_section(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw[: end + 4] if end >= 0 else raw


def sync(messages: list[bytes], library: Any) -> None:
    header_helper.PARSE_ELSEWHERE = len(messages) + 1  # no batch leaves this process
    toggle = library.counting
    work = Path(tempfile.mkdtemp(prefix="mailroom-bench."))
    try:
        runtime, config = bench_mailbox(work, "127.0.0.1", 143)
        client: Any = HeldMailbox(messages)
        folder = FolderSync(
            client,
            runtime.pipeline,
            config,
            max_bytes=runtime.settings.max_message_bytes,
            stop=threading.Event(),
        )
        # callgrind counts each thread only while its own count is on: the thread that
        # fetches and parses the next batch turns its on while it does.
        fetch = folder._fetch_headers

        def counted(uids: Sequence[int]) -> tuple[list[Parsed], int]:
            library.collecting()
            try:
                return fetch(uids)
            finally:
                library.collecting()

        folder._fetch_headers = counted  # type: ignore[method-assign]
        toggle(1)
        stats = folder.sync_all()
        toggle(0)
        runtime.close()
        print(f"outcomes: {stats.outcomes}; bodies fetched: {stats.bodies_fetched}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(count: int) -> None:
    """Run this script again under callgrind and report what it counted."""
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            sys.exit(f"skipped: {tool} is not installed (apt-get install valgrind gcc)")
    build = Path(tempfile.mkdtemp(prefix="mailroom-callgrind."))
    try:
        (build / "toggle.c").write_text(TOGGLE)
        library = build / "toggle.so"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O1", "-o", str(library), str(build / "toggle.c")],
            check=True,
        )
        command = [
            "valgrind", "--tool=callgrind", "--collect-atstart=no", "--instr-atstart=no",
            f"--callgrind-out-file={build / 'callgrind.out'}",
            sys.executable, __file__, "--messages", str(count), "--inside", str(library),
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, check=True)
        print(run.stdout.strip())
        counted = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
        if counted is None:
            sys.exit(f"callgrind reported no count:\n{run.stderr[-2000:]}")
        per_message = int(counted.group(1).replace(",", "")) / count / 1e6
        print(f"{count} messages: {per_message:.3f} M instructions a message")
        print(f"instructions={per_message:.3f}")
    finally:
        shutil.rmtree(build, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # the run under callgrind
    args = parser.parse_args()
    if not CORPORA.is_dir():
        sys.exit(f"skipped: {CORPORA} is absent")
    if args.inside is None:
        measure(args.messages)
        return
    every = max(1, 10_000 // args.messages)
    messages = list(unique(corpus(), 10_000))[::every][: args.messages]
    sync(messages, ctypes.CDLL(args.inside))
    sys.stdout.flush()
    os._exit(0)  # nothing left to count: skip the interpreter's teardown under valgrind


if __name__ == "__main__":
    main()
