"""Benchmark: find_forwarded over ../shared/corpora forwards and replies, with timings.

    python bench/forwards.py

Each forward fixture is checked against expected.csv and the corpus README's rules (original
sender John Doe <john.doe@acme.com> unless the test group says otherwise; testVariant4 is not a
forward); each reply body must not be taken for a forward. The outer subject goes along where
the corpus has one. `forward_cases()` and `reply_cases()` yield (name, body, expected, subject):
what a message-level run will wrap in a MIME message sent to the capture address; `run()` is the
one place that then changes.
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import NamedTuple

from capture.forwards import ForwardedMessage, find_forwarded

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
FOUND_TARGET = 0.99
JOHN = "john.doe@acme.com"
ADVERSARIAL = {
    "'From: ' * 100000": "From: " * 100_000,
    "1 MB of '-'": "-" * 1_000_000,
    "1 MB of '>'": ">" * 1_000_000,
    "'a@' * 500000": "a@" * 500_000,
    "'From: x\\n' * 125000": "From: x\n" * 125_000,
    "'---- Forwarded message ----\\n' * 40000": "---- Forwarded message ----\n" * 40_000,
    "'On 1 Jan, A <a@b.c> wrote:\\n' * 40000": "On 1 Jan, A <a@b.c> wrote:\n" * 40_000,
    "'To: a@b.cd, ' * 100000 after a separator": "-----Original Message-----\nFrom: a@b.cd\n"
    + "To: a@b.cd, " * 100_000,
}


class Expected(NamedTuple):
    forwarded: bool
    address: str | None = None
    name: str | None = None


class Case(NamedTuple):
    name: str
    body: str
    expected: Expected
    subject: str | None = None  # the outer message's subject, where the corpus gives one


def expected_for(test: str) -> Expected:
    """What the corpus README says a test group's fixtures hold."""
    if test == "testVariant4":
        return Expected(False)
    if test == "testVariant5":
        return Expected(True, JOHN, None)
    if test == "testVariant11":
        return Expected(True, JOHN, "John, Doe")
    if test == "testVariant12":
        return Expected(True, None, "John Doe")
    return Expected(True, JOHN, "John Doe")


def forward_cases(root: Path = CORPORA) -> Iterator[Case]:
    folder = root / "forwards"
    fixtures = folder / "fixtures"
    with (folder / "expected.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            body = (fixtures / f"{row['body_fixture']}.txt").read_text(encoding="utf-8")
            subject = row["subject_fixture"]
            outer = None
            if subject:
                outer = (fixtures / f"{subject}.txt").read_text(encoding="utf-8").strip()
            name = row["body_fixture"] + (f" + {subject}" if subject else "")
            yield Case(name, body, expected_for(row["test"]), outer)


def reply_cases(root: Path = CORPORA) -> Iterator[Case]:
    """Reply bodies; the .eml ones are whole messages, so their text part and subject."""
    parser = BytesParser(policy=policy.default)
    for path in sorted((root / "replies" / "messages").iterdir()):
        if path.suffix != ".eml":
            yield Case(path.name, path.read_text(encoding="utf-8"), Expected(False))
            continue
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("plain",))
        body = part.get_content() if isinstance(part, EmailMessage) else ""
        yield Case(path.name, body, Expected(False), str(message.get("subject", "")))


def run(case: Case, *, with_subject: bool = True) -> ForwardedMessage | None:
    return find_forwarded(case.body, subject=case.subject if with_subject else None)


def matches(case: Case, found: ForwardedMessage | None) -> bool:
    expected = case.expected
    if not expected.forwarded or found is None:
        return expected.forwarded == (found is not None)
    return (found.sender.address, found.sender.name) == (expected.address, expected.name)


def describe(found: ForwardedMessage | None) -> str:
    return "not a forward" if found is None else f"{found.sender.name!r} <{found.sender.address}>"


def median_microseconds(cases: list[Case], rounds: int = 10, repeats: int = 5) -> float:
    """Median over messages of the best of `repeats` averages over `rounds` runs each."""
    timings: list[float] = []
    for case in cases:
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(rounds):
                run(case)
            best = min(best, (time.perf_counter() - started) / rounds)
        timings.append(best * 1e6)
    return statistics.median(timings)


def large_cases(forwards: list[Case]) -> list[Case]:
    """~20 KB bodies: a long note (with times, URLs and a few labels) above a forward, and alone."""
    line = "Note: call at 10:30 about the quote, see https://example.com/q?id=7 and reply.\n"
    prose = "Thanks for the meeting today, here is the summary we agreed on.\n" * 4 + line
    note = prose * (20_000 // len(prose))
    forward = forwards[0]
    return [
        Case("20 KB note + forward", note + forward.body, forward.expected),
        Case("20 KB without forward", note, Expected(False)),
    ]


def adversarial_milliseconds() -> dict[str, float]:
    timings: dict[str, float] = {}
    for label, body in ADVERSARIAL.items():
        started = time.perf_counter()
        find_forwarded(body, subject="Fwd: adversarial")
        find_forwarded(body)
        timings[label] = (time.perf_counter() - started) / 2 * 1e3
    return timings


def main() -> int:
    if not (CORPORA / "forwards" / "expected.csv").is_file():
        print(f"corpus absent: no {CORPORA / 'forwards' / 'expected.csv'}", file=sys.stderr)
        return 2
    forwards, replies = list(forward_cases()), list(reply_cases())
    failures = [case for case in forwards if not matches(case, run(case))]
    body_only = sum(matches(case, run(case, with_subject=False)) for case in forwards)
    false_forwards = [case for case in replies if run(case) is not None]
    share = (len(forwards) - len(failures)) / len(forwards)
    print(f"forwards: {len(forwards) - len(failures)}/{len(forwards)} right ({share:.1%}),")
    print(f"  {body_only}/{len(forwards)} when the outer subject is withheld (body only)")
    for case in failures:
        print(f"  FAIL {case.name}: expected {case.expected}, got {describe(run(case))}")
    print(f"replies: {len(false_forwards)}/{len(replies)} wrongly taken for forwards")
    for case in false_forwards:
        print(f"  FALSE FORWARD {case.name}: {describe(run(case))}")
    median = median_microseconds(forwards + replies)
    print(f"time: median {median:.0f} µs per message")
    for case in large_cases(forwards):
        assert matches(case, run(case))
        print(f"  {case.name}: {median_microseconds([case]):.0f} µs")
    for label, milliseconds in adversarial_milliseconds().items():
        print(f"  adversarial {label}: {milliseconds:.1f} ms")
    target = "met" if share >= FOUND_TARGET and not false_forwards else "NOT met"
    print(f"target (>= {FOUND_TARGET:.0%} found, 0 false forwards): {target}")
    print(f"found={share:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
