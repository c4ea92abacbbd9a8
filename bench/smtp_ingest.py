"""Benchmark: SMTP ingest of Mailroom against a null aiosmtpd handler, same client, one run.

    python bench/smtp_ingest.py [--messages 3000] [--sessions 20] [--rounds 3]

Both servers run as their own process on 127.0.0.1; the client is an asyncio SMTP client with
reused sessions, driven by the replies as they arrive and pipelining MAIL, RCPT and DATA. It
shares the two cores with the server, so it prints its own CPU per message beside the
server's. Time-to-250 is measured from the end-of-data dot to the 250 reply.

The two servers run side by side and are measured in turn, a few rounds: these machines'
speed drifts by a fifth within minutes, and two measurements next to each other drift
least. The ratio is the median round's. The last line is `ratio=<x>` for 2 KB messages
(Mailroom's msg/s over the null handler's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

NULL_SERVER = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Null:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Null(), data_size_limit=26214400),
                                      "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
asyncio.run(main())
"""
CAPTURE = "capture@mailroom.example.com"


@dataclass
class Run:
    messages: int
    seconds: float
    latencies: list[float]
    client_cpu: float  # CPU seconds of this process, the client, during the run
    # the server's CPU seconds, per process (the listener, and its writer process) per thread
    cpu: dict[int, dict[str, float]] = field(default_factory=dict)

    def cpu_line(self) -> str:
        """The server's CPU per message, per process and thread, and how many cores it kept
        busy: a process whose threads add up to about 1.0 core is bound by its GIL."""
        if not self.cpu:
            return "server CPU: not measured (no /proc)"
        total = sum(sum(threads.values()) for threads in self.cpu.values())
        parts = []
        for threads in self.cpu.values():
            per = sorted((t / self.messages * 1000 for t in threads.values()), reverse=True)
            busy = " + ".join(f"{ms:.2f}" for ms in per if ms >= 0.01) or "0"
            parts.append(f"{sum(per):.2f} ({busy})" if len(busy.split()) > 1 else busy)
        return (
            f"server CPU {total / self.messages * 1000:.2f} ms/msg "
            f"(by process: {', '.join(parts)}), {total / self.seconds:.2f} cores; "
            f"client {self.client_cpu / self.messages * 1000:.2f} ms/msg"
        )

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def message(n: int, size: int) -> bytes:
    head = (
        f"From: Alice <alice@example.com>\r\nTo: Bob <bob{n % 50}@customer{n % 7}.example>\r\n"
        f"Subject: Order {n}\r\nMessage-ID: <bench-{size}-{n}-{time.time_ns()}@example.com>\r\n"
        "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nContent-Type: text/plain\r\n\r\n"
    )
    line = "Please find the quote for the licences and the delivery schedule.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body).encode()


class Session(asyncio.Protocol):
    """One client session, driven from the replies as they arrive (no task or stream per
    reply: the client shares the machine's two cores with the server it measures, so it
    should take as little of them as it can, as smtp-source would). MAIL, RCPT and DATA go
    out together (RFC 2920); the message follows the 354."""

    def __init__(self, payloads: list[bytes], latencies: list[float]) -> None:
        self.payloads = iter(payloads)
        self.latencies = latencies
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.expected: list[tuple[bytes, Callable[[], None]]] = [(b"220", self.ehlo)]
        self.message = b""
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            if line[3:4] == b"-":  # a multi-line reply goes on
                continue
            code, then = self.expected.pop(0)
            if not line.startswith(code):
                self.fail(RuntimeError(f"expected {code!r}, got {line!r}"))
                return
            then()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.fail(exc or RuntimeError("the server closed the session"))

    def fail(self, error: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, *replies: tuple[bytes, Callable[[], None]]) -> None:
        assert self.transport is not None
        self.expected += replies
        self.transport.write(data)

    def ehlo(self) -> None:
        self.send(b"EHLO bench.example.com\r\n", (b"250", self.next))

    def next(self) -> None:
        self.message = next(self.payloads, b"")
        if not self.message:
            self.send(b"QUIT\r\n", (b"221", self.quit))
            return
        envelope = f"MAIL FROM:<alice@example.com>\r\nRCPT TO:<{CAPTURE}>\r\nDATA\r\n"
        self.send(envelope.encode(), (b"250", _nothing), (b"250", _nothing), (b"354", self.data))

    def data(self) -> None:
        self.send(self.message + b"\r\n.\r\n", (b"250", self.accepted))
        self.sent = time.perf_counter()

    def accepted(self) -> None:
        self.latencies.append(time.perf_counter() - self.sent)
        self.next()

    def quit(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        assert self.transport is not None
        self.transport.close()


def _nothing() -> None:
    pass


async def session(port: int, payloads: list[bytes], latencies: list[float]) -> None:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: Session(payloads, latencies), "127.0.0.1", port
    )
    await protocol.done


async def drive(port: int, count: int, sessions: int, size: int) -> Run:
    payloads = [message(n, size) for n in range(count)]
    latencies: list[float] = []
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(
        *(session(port, payloads[i::sessions], latencies) for i in range(sessions))
    )
    return Run(count, time.perf_counter() - started, latencies, time.process_time() - cpu)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int) -> None:
    until = time.monotonic() + 30
    while time.monotonic() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def start_null(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", NULL_SERVER, str(port)])


def start_mailroom(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    mailroom = shutil.which("mailroom") or str(Path(sys.executable).parent / "mailroom")
    env = os.environ | {
        "MAILROOM_DATA_DIR": str(data_dir),
        "MAILROOM_SMTP_PORT": str(port),
        "MAILROOM_API_PORT": "0",
        "MAILROOM_SECRET_KEY": "bench",
    }
    subprocess.run(
        [mailroom, "employees", "add", "alice@example.com"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return subprocess.Popen([mailroom, "serve"], env=env, stderr=subprocess.DEVNULL)


def descendants(pid: int) -> list[int]:
    """A process and every process under it (its writer process), from /proc (Linux)."""
    found, todo = [], [pid]
    while todo:
        process = todo.pop()
        found.append(process)
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # the thread ended
                continue
    return found


def tree_cpu(pid: int) -> dict[int, dict[str, float]]:
    """CPU seconds (user + system) of each thread of a process and of its child processes,
    from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, dict[str, float]] = {}
    for process in descendants(pid):
        threads = found.setdefault(process, {})
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:  # the thread ended
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            threads[task.name] = (int(fields[11]) + int(fields[12])) / ticks
    return found


@contextmanager
def running(kind: str, sessions: int, size: int) -> Iterator[tuple[int, int]]:
    """A server of this kind, started and warmed up: its process id and port."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_null(port) if kind == "null" else start_mailroom(port, Path(tmp))
        try:
            wait_listening(port)
            asyncio.run(drive(port, 200, sessions, size))  # warm up
            yield proc.pid, port
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def measure(server: tuple[int, int], count: int, sessions: int, size: int) -> Run:
    pid, port = server
    before = tree_cpu(pid)
    run = asyncio.run(drive(port, count, sessions, size))
    after = tree_cpu(pid)
    run.cpu = {
        process: {t: cpu - before.get(process, {}).get(t, 0.0) for t, cpu in threads.items()}
        for process, threads in after.items()
    }
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ratio_2k = 0.0
    for size in (2048, 20480):
        with (
            running("null", args.sessions, size) as null_server,
            running("mailroom", args.sessions, size) as our_server,
        ):
            rounds = [
                (
                    measure(null_server, args.messages, args.sessions, size),
                    measure(our_server, args.messages, args.sessions, size),
                )
                for _ in range(args.rounds)
            ]
        ratios = [ours.rate / null.rate for null, ours in rounds]
        ratio = statistics.median(ratios)
        ratio_2k = ratio if size == 2048 else ratio_2k
        print(
            f"{size // 1024:>3} KB x {args.messages}, {args.sessions} sessions, "
            f"{args.rounds} rounds (the null handler, then Mailroom, in turn)"
        )
        for number, (null, ours) in enumerate(rounds, 1):
            print(
                f"    round {number}: null {null.rate:6.0f} msg/s, mailroom {ours.rate:6.0f} "
                f"msg/s, ratio {ours.rate / null.rate:.2f}"
            )
        # the round whose ratio is the median, in detail
        null, ours = rounds[sorted(range(len(rounds)), key=lambda i: ratios[i])[len(rounds) // 2]]
        for name, run in (("null aiosmtpd", null), ("mailroom", ours)):
            mean = statistics.fmean(run.latencies) * 1000
            print(
                f"    {name:14} {run.rate:8.0f} msg/s   time-to-250 p50 "
                f"{run.percentile(0.5):6.1f} ms  p99 {run.percentile(0.99):6.1f} ms  "
                f"(mean {mean:.1f})"
            )
            print(f"    {'':14} {run.cpu_line()}")
        print(f"    ratio {ratio:.2f} (the median round's)")
    print(f"ratio={ratio_2k:.2f}")


if __name__ == "__main__":
    main()
