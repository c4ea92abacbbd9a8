"""Benchmark: run explain over ../shared/corpora and print confusion tables against targets.

    python bench/classify.py [--policy FILE]

Enron is evaluated with an organization domain that is not enron.com and each From address as
the submitting employee (channel bcc); SpamAssassin and the bounces as mailbox sync (channel
imap) with the first recipient as the mailbox owner.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from app.runtime import build_runtime
from app.settings import BUNDLED_POLICY, Settings
from capture.parse import parse_message
from capture.pipeline import Envelope, Pipeline
from policies.model import Channel
from policies.predicates import PREDICATES

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
OUTCOMES = ("capture", "metadata_only", "hold", "drop", "reject")
ENRON_LABELS = {
    "1.1": "1.1 business",
    "1.2": "1.2 personal",
    "1.3": "1.3 personal-professional",
    "1.4": "1.4 logistics",
    "1.5": "1.5 employment",
    "1.6": "1.6 document editing",
    "1.7": "1.7 empty (attachment)",
    "1.8": "1.8 empty",
}

Table = dict[str, Counter[str]]


def enron() -> Iterator[tuple[str, bytes]]:
    root = CORPORA / "enron-categories"
    with (root / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            path = root / "messages" / row["folder"] / f"{row['id']}.txt"
            yield ENRON_LABELS.get(row["majority"], row["majority"]), path.read_bytes()


def spamassassin() -> Iterator[tuple[str, bytes]]:
    root = CORPORA / "spamassassin"
    with (root / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield row["group"], (root / "messages" / row["group"] / row["file"]).read_bytes()


def bounces() -> Iterator[tuple[str, bytes]]:
    root = CORPORA / "bounces"
    with (root / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield row["kind"], (root / "messages" / row["path"]).read_bytes()


def submitter(raw: bytes, channel: Channel) -> str:
    message = parse_message(raw)
    if channel is Channel.BCC:
        return message.sender.address if message.sender else ""
    return message.to[0].address if message.to else "mailbox-owner@corpus.invalid"


def run(pipeline: Pipeline, corpus: Iterator[tuple[str, bytes]], channel: Channel) -> Table:
    table: Table = defaultdict(Counter)
    for label, raw in corpus:
        explained = pipeline.explain(raw, Envelope(submitter(raw, channel)), channel)
        table[label][explained.decision.outcome.value] += 1
        table[label]["rule:" + (explained.decision.deciding_rule or "default")] += 1
        bounce = PREDICATES["bounce"]
        if bounce.check(explained.observations, bounce.params(), pipeline.secret).hit:
            table[label]["recognized-bounce"] += 1
    return table


def show(title: str, table: Table, *, extra: str | None = None) -> None:
    columns = [*OUTCOMES, *([extra] if extra else [])]
    print(f"\n{title}")
    print(f"  {'':28}" + "".join(f"{c:>15}" for c in columns) + f"{'total':>8}")
    for label in sorted(table):
        row = table[label]
        total = sum(row[c] for c in OUTCOMES)
        print(f"  {label:28}" + "".join(f"{row[c]:>15}" for c in columns) + f"{total:>8}")


def show_rules(title: str, table: Table) -> None:
    print(f"\n{title}: deciding rule")
    for label in sorted(table):
        rules = sorted(
            ((k[5:], n) for k, n in table[label].items() if k.startswith("rule:")),
            key=lambda item: -item[1],
        )
        print(f"  {label:28} " + ", ".join(f"{rule} {n}" for rule, n in rules))


def share(table: Table, labels: list[str], outcomes: tuple[str, ...]) -> float:
    hit = sum(table[label][o] for label in labels for o in outcomes)
    total = sum(table[label][o] for label in labels for o in OUTCOMES)
    return hit / total if total else 0.0


def targets(enron_t: Table, spam_t: Table, bounce_t: Table) -> list[tuple[str, float, str, bool]]:
    business = [ENRON_LABELS[k] for k in ("1.1", "1.4", "1.6")]
    spam = [g for g in spam_t if g.startswith("spam")]
    easy = [g for g in spam_t if g.startswith("easy-ham")]
    bounce_total = sum(bounce_t["bounce_dsn"][o] for o in OUTCOMES)
    recognized = bounce_t["bounce_dsn"]["recognized-bounce"] / bounce_total if bounce_total else 0
    personal_captured = enron_t[ENRON_LABELS["1.2"]]["capture"]
    captured = share(enron_t, business, ("capture", "metadata_only"))
    held = share(enron_t, business, ("hold",))
    spam_captured = sum(spam_t[g]["capture"] + spam_t[g]["metadata_only"] for g in spam)
    easy_captured = share(spam_t, easy, ("capture", "metadata_only"))
    return [
        ("Enron 1.2 captured with content", personal_captured, "= 0", personal_captured == 0),
        ("Enron 1.1/1.4/1.6 captured", captured, ">= 95 %", captured >= 0.95),
        ("Enron 1.1/1.4/1.6 held", held, "<= 5 %", held <= 0.05),
        ("SpamAssassin spam captured", spam_captured, "= 0", spam_captured == 0),
        ("SpamAssassin easy-ham captured", easy_captured, "<= 2 %", easy_captured <= 0.02),
        ("bounces (DSN) recognized", recognized, ">= 99 %", recognized >= 0.99),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, default=BUNDLED_POLICY)
    args = parser.parse_args()
    if not CORPORA.is_dir():
        print(f"no corpora at {CORPORA}: this benchmark needs ../shared/corpora", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            org_domains=["mailroom-bench.invalid"],
            policy=args.policy,
            secret_key="bench",
        )
        runtime = build_runtime(settings)
        started = time.perf_counter()
        enron_t = run(runtime.pipeline, enron(), Channel.BCC)
        spam_t = run(runtime.pipeline, spamassassin(), Channel.IMAP)
        bounce_t = run(runtime.pipeline, bounces(), Channel.IMAP)
        elapsed = time.perf_counter() - started
        runtime.close()
    count = sum(
        sum(r[o] for o in OUTCOMES) for t in (enron_t, spam_t, bounce_t) for r in t.values()
    )
    print(
        f"policy {runtime.pipeline.engine.policy.sha256[:12]}  {count} messages in "
        f"{elapsed:.1f} s ({elapsed / count * 1000:.2f} ms per message, explain end to end)"
    )
    show("Enron by majority category (channel bcc)", enron_t)
    show("SpamAssassin by group (channel imap)", spam_t)
    show("Bounces by kind (channel imap)", bounce_t, extra="recognized-bounce")
    show_rules("Enron", enron_t)
    show_rules("SpamAssassin", spam_t)
    show_rules("Bounces", bounce_t)
    print("\nTargets")
    results = targets(enron_t, spam_t, bounce_t)
    for name, value, goal, ok in results:
        shown = f"{value:.1%}" if isinstance(value, float) else str(value)
        print(f"  {'ok  ' if ok else 'MISS'} {name:36} {shown:>8}  (target {goal})")
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
