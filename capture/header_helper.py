"""Parse: a mailbox sync's header sections, parsed in a helper process of their own.

A mailbox sync is bound by one core: the thread that talks to the server and the one that
decides share one GIL, and parsing header sections took a quarter of its time. Parsing needs
no database, so a helper process parses the next batch on the other core while this one
decides the batch before. The messages come back as plain values (`message_fields`): the
very messages `parse_headers` gives here.

The helper is started by the first large batch (`python -m capture.header_helper FD`: it
imports the parser alone, a tenth of a second) and serves every mailbox this process syncs,
one batch at a time; a batch that finds it busy, or a small one, is parsed where it is. If
the helper dies, its batch is parsed here and the next large batch starts another. It exits
when this process closes its end of the socket, or dies.
"""

from __future__ import annotations

import atexit
import logging
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

from capture.frames import frame, read_frame
from capture.parse import ParsedMessage, message_fields, message_from_fields, parse_headers
from policies.observe import Ahead, work_ahead

log = logging.getLogger("mailroom.imap")

PARSE_ELSEWHERE = 64  # header sections a batch needs to be sent to the helper
BUFFER_BYTES = 4 * 1024 * 1024  # a batch of headers in as few system calls as the kernel allows

Sections = list[tuple[int, bytes, int]]  # (UID, header section, size the server reports)
# (UID, message, size, and what the helper worked out from the message alone, if it parsed it)
Parsed = tuple[int, ParsedMessage, int, Ahead | None]


class HeaderParsing:
    """This process's side: `parse` a batch, in the helper when it pays."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one batch at a time on the socket
        self._helper: tuple[subprocess.Popen[bytes], socket.socket] | None = None
        atexit.register(self.close)

    def parse(self, sections: Sections) -> list[Parsed]:
        if len(sections) >= PARSE_ELSEWHERE and self._lock.acquire(blocking=False):
            try:
                parsed = self._parse_in_helper([(header, size) for _, header, size in sections])
            finally:
                self._lock.release()
            if parsed is not None:
                found: list[Parsed] = []
                for (uid, header, size), (fields, worked) in zip(sections, parsed, strict=True):
                    message = message_from_fields(fields, header)
                    found.append((uid, message, size, Ahead.from_values(message, worked)))
                return found
        return [
            (uid, parse_headers(header, size=size), size, None) for uid, header, size in sections
        ]

    def close(self) -> None:
        """Stop the helper, if one runs (a later large batch starts another)."""
        with self._lock:
            self._stop()

    def _parse_in_helper(self, sections: list[tuple[bytes, int]]) -> list[tuple[Any, ...]] | None:
        try:
            if self._helper is None:
                self._helper = _start()
            sock = self._helper[1]
            sock.sendall(frame(sections))
            fields: list[tuple[Any, ...]] = read_frame(sock)
            return fields
        except (OSError, EOFError) as error:
            log.error("header parsing helper failed (%s); parsing here", type(error).__name__)
            self._stop()
            return None

    def _stop(self) -> None:
        if self._helper is None:
            return
        process, sock = self._helper
        self._helper = None
        sock.close()  # the helper sees the end and exits
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worked_out(sections: list[tuple[bytes, int]]) -> list[tuple[Any, ...]]:
    """The helper's answer: each message's fields, and observe's work on the message alone
    (`Ahead`: its automation facts and the personal score of its subject, which is all the
    text a header section has), as plain values."""
    answers = []
    for header, size in sections:
        message = parse_headers(header, size=size)
        answers.append((message_fields(message), work_ahead(message).values()))
    return answers


def _start() -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair()
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    with theirs:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "capture.header_helper", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
        )
    return process, ours


HEADER_PARSING = HeaderParsing()  # one helper for every mailbox this process syncs


def main() -> None:
    """The helper: batches of (header section, size) in, their messages out (see worked_out)."""
    # This process's parent decides when it stops (by closing the socket): a Ctrl-C or a
    # service manager's SIGTERM reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        while True:
            try:
                sections = read_frame(sock)
            except EOFError:
                return
            try:
                sock.sendall(frame(worked_out(sections)))
            except OSError:  # the parent is gone
                return
    except Exception as error:  # its type only: a traceback could quote a header
        print(f"header parsing helper failed ({type(error).__name__})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
