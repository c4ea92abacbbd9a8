"""Train and measure the personal-content model on ../shared/corpora/enron-categories.

    python bench/train_personal.py            # cross-validate, print figures, write the model
    python bench/train_personal.py --dry-run  # cross-validate and print only

Needs scikit-learn (a development tool, not a Mailroom dependency). Personal: Enron 1.2 and
1.3; business: everything else. Words that name people or Enron are left out of the
vocabulary, so that the model learns how personal mail reads rather than who wrote it.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import date
from pathlib import Path
from typing import Any

from capture.parse import parse_message
from policies.personal_words import MODEL_FILE, features, tokens

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpora" / "enron-categories"
PERSONAL = {"1.2": 1.0, "1.3": 0.6}  # label → sample weight as a positive
CORPUS_WORDS = frozenset(
    "enron ect hou ees corp na pm am cc bcc subject sent original message forwarded mailto "
    "com net org www http https e-mail email fw fwd re to from doc xls image".split()
)
VOCABULARY = 300
THREADS: list[str] = []  # per message, filled by load(): the cross-validation groups
SEED = 20261123


def load() -> tuple[list[dict[str, float]], list[int], list[float], list[str], set[str]]:
    rows: list[dict[str, float]] = []
    labels: list[int] = []
    weights: list[float] = []
    categories: list[str] = []
    names: set[str] = set()
    with (CORPUS / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            raw = (CORPUS / "messages" / row["folder"] / f"{row['id']}.txt").read_bytes()
            message = parse_message(raw)  # exactly what the pipeline will see
            for header in ("from", "to", "cc", "x-from", "x-to", "x-cc"):
                names.update(tokens(message.header(header) or ""))
            rows.append(features(message.subject, message.text, recipients=len(message.recipients)))
            labels.append(1 if row["majority"] in PERSONAL else 0)
            weights.append(PERSONAL.get(row["majority"], 1.0))
            categories.append(row["majority"])
            THREADS.append(" ".join(tokens(message.text))[-400:])
    return rows, labels, weights, categories, names


def vocabulary(rows: list[dict[str, float]], labels: list[int], banned: set[str]) -> list[str]:
    """The words that best separate the classes (chi²), minus names and corpus boilerplate."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.feature_selection import chi2

    words = [{k: v for k, v in r.items() if k.startswith("word:")} for r in rows]
    vectorizer = DictVectorizer()
    matrix = vectorizer.fit_transform(words)
    frequency = (matrix > 0).sum(axis=0).A1
    scores, _ = chi2(matrix, labels)
    ranked = sorted(
        zip(vectorizer.get_feature_names_out(), scores, frequency, strict=True),
        key=lambda item: -float(item[1] if item[1] == item[1] else 0),
    )
    chosen = [name for name, _, df in ranked if df >= 3 and name[5:] not in banned]
    return chosen[:VOCABULARY]


def fit(
    rows: list[dict[str, float]], labels: list[int], weights: list[float], banned: set[str]
) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    vocab = set(vocabulary(rows, labels, banned))
    continuous = sorted(k for k in rows[0] if not k.startswith("word:"))
    means = {k: sum(r[k] for r in rows) / len(rows) for k in continuous}
    scales = {
        k: (sum((r[k] - means[k]) ** 2 for r in rows) / len(rows)) ** 0.5 or 1.0 for k in continuous
    }
    names = sorted(vocab) + continuous
    matrix = [[_value(r, n, means, scales) for n in names] for r in rows]
    model = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000)
    model.fit(matrix, labels, sample_weight=weights)
    return {
        "weights": {n: round(float(w), 5) for n, w in zip(names, model.coef_[0], strict=True)},
        "intercept": round(float(model.intercept_[0]), 5),
        "means": {k: round(v, 6) for k, v in means.items()},
        "scales": {k: round(v, 6) for k, v in scales.items()},
    }


def _value(
    row: dict[str, float], name: str, means: dict[str, float], scales: dict[str, float]
) -> float:
    value = row.get(name, 0.0)
    return (value - means[name]) / scales[name] if name in scales else value


def predict(model: dict[str, Any], row: dict[str, float]) -> float:
    import math

    logit = model["intercept"] + sum(
        w * _value(row, n, model["means"], model["scales"]) for n, w in model["weights"].items()
    )
    return 1 / (1 + math.exp(-max(-40, min(40, logit))))


def cross_validate(data: tuple[Any, ...], repeats: int = 3) -> list[tuple[str, float, int]]:
    """Out-of-fold probabilities: (category, P(personal), repeat) for every message."""
    from sklearn.model_selection import StratifiedGroupKFold

    rows, labels, weights, categories, banned = data
    results: list[tuple[str, float, int]] = []
    for repeat in range(repeats):
        # Messages that quote the same mail share their ending: keep a thread in one fold, or
        # the quoted text leaks the answer across folds and the figures flatter the model.
        folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=SEED + repeat)
        for train, test in folds.split(rows, categories, THREADS):
            model = fit(
                [rows[i] for i in train],
                [labels[i] for i in train],
                [weights[i] for i in train],
                banned,
            )
            results += [(categories[i], predict(model, rows[i]), repeat) for i in test]
    return results


BANDS = ("content", "metadata", "hold", "drop")


def report(
    results: list[tuple[str, float, int]], cuts: tuple[float, float, float]
) -> dict[str, Any]:
    """Out-of-fold counts per category in each band the thresholds make."""
    table: dict[str, list[int]] = {}
    for category, probability, _ in results:
        band = sum(1 for cut in cuts if probability >= cut)
        table.setdefault(category, [0, 0, 0, 0])[band] += 1
    correct = sum(1 for c, p, _ in results if (p >= 0.5) == (c in PERSONAL))
    print(f"accuracy at 0.5 (personal = 1.2 + 1.3): {correct / len(results):.3f}")
    print("thresholds: metadata {:.4f}, hold {:.3f}, drop {:.3f}".format(*cuts))
    print(f"  {'category':10}" + "".join(f"{b:>10}" for b in BANDS))
    for category in sorted(table):
        print(f"  {category:10}" + "".join(f"{n:>10}" for n in table[category]))
    return {
        "accuracy_at_half": round(correct / len(results), 4),
        "bands": list(BANDS),
        "out_of_fold": table,
    }


def choose_thresholds(results: list[tuple[str, float, int]]) -> tuple[float, float, float]:
    """Metadata: below every purely personal (1.2) message, with a margin for unseen ones;
    hold: where 3 % of business mail remains; drop: where 0.5 % does."""
    personal = sorted(p for c, p, _ in results if c == "1.2")
    business = sorted((p for c, p, _ in results if c in ("1.1", "1.4", "1.6")), reverse=True)
    metadata = personal[0] * 0.5
    hold = max(business[len(business) * 3 // 100], metadata * 2)
    drop = max(business[len(business) // 200], hold + 0.02)
    return round(metadata, 5), round(hold, 3), round(min(drop, 0.99), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    data = load()
    banned = data[4] | CORPUS_WORDS
    data = (*data[:4], banned)
    results = cross_validate(data)
    metadata, hold, drop = choose_thresholds(results)
    figures = report(results, (metadata, hold, drop))
    if args.dry_run:
        return
    model = fit(data[0], data[1], data[2], banned)
    model |= {
        "version": f"enron-lr-{date.today().isoformat()}",
        "metadata_threshold": metadata,
        "hold_threshold": hold,
        "drop_threshold": drop,
        "training": {
            "corpus": "enron-categories (UC Berkeley annotated subset, half)",
            "positives": "1.2, 1.3 (weight 0.6)",
            "cv": "5-fold x 3",
            **figures,
        },
    }
    MODEL_FILE.write_text(json.dumps(model, indent=1, sort_keys=True) + "\n")
    print(f"wrote {MODEL_FILE} ({MODEL_FILE.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
