"""Benchmark: parse_message alone, and parse plus extraction, over ../shared/corpora messages.

    python bench/parse.py [--limit N]

Extraction is what the filing stage will ask for: the text (capture.content, from the MIME tree
parse_message_and_mime read), people and companies, the sender's signature and the thread key.
Prints messages/s and p50/p99 milliseconds for every message and for the typical 2-20 KB ones,
whose target is parse + extraction under ~2 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from capture.content import message_content
from capture.parse import parse_message, parse_message_and_mime
from capture.people import people, person
from capture.signatures import extract_signature, region_for_domain
from capture.threads import thread_key

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
TYPICAL = (2_000, 20_000)
TARGET_MS = 2.0


def messages() -> list[bytes]:
    paths = [
        *sorted((CORPORA / "enron-categories" / "messages").glob("*/*.txt")),
        *sorted((CORPORA / "spamassassin" / "messages").glob("*/*.txt")),
        *sorted((CORPORA / "bounces").rglob("*.eml")),
    ]
    return [p.read_bytes() for p in paths]


def parse_only(raw: bytes) -> None:
    parse_message(raw)


def parse_and_extract(raw: bytes) -> None:
    message, mime = parse_message_and_mime(raw)
    content = message_content(mime)
    people(message)
    sender = person(message.sender) if message.sender else None
    extract_signature(
        content.text,
        sender_name=message.sender.name if message.sender else "",
        company_hint=sender.company.name if sender and sender.company else "",
        region=region_for_domain(sender.domain) if sender else None,
    )
    thread_key(message)


def timings(step: Callable[[bytes], None], corpus: list[bytes]) -> list[float]:
    spent = []
    for raw in corpus:
        start = time.perf_counter()
        step(raw)
        spent.append((time.perf_counter() - start) * 1000)
    return spent


def report(label: str, spent: list[float]) -> None:
    ordered = sorted(spent)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    rate = len(ordered) / (sum(ordered) / 1000)
    print(
        f"  {label:<14} {len(ordered):>5} msgs {rate:>7.0f} msg/s"
        f"  p50 {p50:6.3f} ms  p99 {p99:7.3f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="messages to use (0: all)")
    args = parser.parse_args()
    corpus = messages()
    if not corpus:
        print(f"no messages under {CORPORA}", file=sys.stderr)
        return 1
    corpus = corpus[: args.limit] if args.limit else corpus
    for raw in corpus[::50]:  # load phone metadata, the suffix list, the regexes
        parse_and_extract(raw)
    typical = [i for i, raw in enumerate(corpus) if TYPICAL[0] <= len(raw) <= TYPICAL[1]]
    print(f"{len(corpus)} messages, {len(typical)} of 2-20 KB, from {CORPORA}")
    for label, step in (("parse_message", parse_only), ("parse + extraction", parse_and_extract)):
        spent = timings(step, corpus)
        print(label)
        report("all messages", spent)
        report("2-20 KB", [spent[i] for i in typical])
        if step is parse_and_extract:
            p50 = statistics.median(spent[i] for i in typical)
            verdict = "within" if p50 < TARGET_MS else "OVER"
            print(f"  typical p50 {p50:.3f} ms: {verdict} the {TARGET_MS} ms target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
