"""Decide: how personal a text reads, from a small linear model that names its signals."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from pathlib import Path

MODEL_FILE = Path(__file__).resolve().parent / "personal_words.json"
MAX_CHARS = 12_000  # the opening of a message says enough; a huge body costs no more than this
WORD = re.compile(r"[a-z][a-z']{1,19}")
# :) ;-( :D :p <3 and the like. Written to start with one character class, which the regular
# expression engine scans for directly: three times faster on text without emoticons than
# the same pattern as two alternatives with IGNORECASE (which matched the same text).
EMOTICON = re.compile(r"[:;<](?:(?<=[:;])-?[)(dDpP]|(?<=<)3)")

# Hand-written lexicons: they carry the model beyond the words of its training corpus.
LEXICONS: dict[str, frozenset[str]] = {
    "family": frozenset(
        "mom mum mother dad father son daughter kids kid children baby wife husband brother "
        "sister grandma grandpa grandmother grandfather aunt uncle cousin family niece nephew "
        "honey sweetie sweetheart darling hubby parents".split()
    ),
    "feelings": frozenset(
        "love loved lovely miss missed sorry sad happy glad hugs hug kisses xoxo proud "
        "hope wonderful sweet fun funny laugh lol hehe haha wow cute beautiful feel "
        "feeling worried scared blessed pray prayers".split()
    ),
    "leisure": frozenset(
        "weekend party birthday dinner lunch drinks beer wine movie movies game games golf "
        "football basketball baseball tennis vacation holiday holidays trip beach church "
        "wedding christmas thanksgiving camping fishing hunting concert tickets dog cat "
        "puppy house garden bike ride shopping restaurant friday saturday sunday tonight "
        "cake anniversary graduation hospital doctor surgery funeral".split()
    ),
    "business": frozenset(
        "contract agreement invoice payment price pricing proposal quote deal customer "
        "client meeting agenda schedule project report review draft document documents "
        "attached attachment budget revenue capacity transmission gas power market "
        "regulatory legal counsel filing approval approve deadline team presentation "
        "analysis forecast trading trade position volume tariff rate rates purchase "
        "supply demand issue issues comments discuss discussed please regards".split()
    ),
}
PRONOUNS_I = frozenset("i i'm i've i'll me my mine myself".split())
PRONOUNS_YOU = frozenset("you you're you've your yours yourself".split())


@dataclass(frozen=True, slots=True)
class PersonalScore:
    probability: float
    signals: tuple[tuple[str, float], ...]


def tokens(text: str) -> list[str]:
    return WORD.findall(text[:MAX_CHARS].lower())


def features(subject: str, body: str, *, recipients: int = 1) -> dict[str, float]:
    """Word presence plus lexicon, style and size features; the same for training and use."""
    words = tokens(f"{subject}\n{body}")
    counts = Counter(words)
    found: dict[str, float] = {f"word:{w}": 1.0 for w in counts}
    return found | _measures(counts, len(words), body, recipients)


def _measures(counts: Counter[str], words: int, body: str, recipients: int) -> dict[str, float]:
    """The features other than word presence."""
    total = max(1, words)
    scale = math.log1p(total)
    found: dict[str, float] = {}
    for name, lexicon in LEXICONS.items():
        found[f"lexicon:{name}"] = _occurrences(counts, lexicon) / scale
    text = body[:MAX_CHARS]
    found["style:exclamations"] = text.count("!") / scale
    found["style:first-person"] = _occurrences(counts, PRONOUNS_I) / total * 10
    found["style:second-person"] = _occurrences(counts, PRONOUNS_YOU) / total * 10
    # Every emoticon has one of these; most texts have none, and finding none is quicker.
    marked = ":" in text or ";" in text or "<" in text
    found["style:emoticons"] = float(len(EMOTICON.findall(text))) if marked else 0.0
    found["size:recipients"] = math.log1p(max(0, recipients))
    return found


def _occurrences(counts: Counter[str], lexicon: frozenset[str]) -> int:
    """How many of the words are in the lexicon, counting repeats (over distinct words)."""
    return sum(counts[w] for w in lexicon.intersection(counts))


@cache
def _model() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    return loaded


def thresholds() -> tuple[float, float, float]:
    """(metadata, hold, drop): where the bundled policy keeps no text, holds, or drops."""
    model = _model()
    names = ("metadata_threshold", "hold_threshold", "drop_threshold")
    return tuple(float(model[n]) for n in names)  # type: ignore[return-value,arg-type]


@cache
def _word_weights() -> dict[str, float]:
    """The weights of word-presence features, by the word itself."""
    weights: dict[str, float] = _model()["weights"]  # type: ignore[assignment]
    return {name[5:]: w for name, w in weights.items() if name.startswith("word:")}


def score_personal(subject: str, body: str, *, recipients: int = 1) -> PersonalScore:
    """P(personal) for a message's text, with the five strongest personal-leaning signals.

    The model applied to `features` (what it was trained on), without naming every word of
    the text as a feature first: only the words the model weighs are looked at. The same
    contributions in the same order, so the same sum to the last bit."""
    model = _model()
    weights: dict[str, float] = model["weights"]  # type: ignore[assignment]
    means: dict[str, float] = model["means"]  # type: ignore[assignment]
    scales: dict[str, float] = model["scales"]  # type: ignore[assignment]
    words = tokens(f"{subject}\n{body}")
    counts = Counter(words)
    word_weights = _word_weights()
    contributions = {  # presence is 1.0: the contribution is the weight itself
        f"word:{w}": weight for w in counts if (weight := word_weights.get(w)) is not None
    }
    contributions |= _contributions(
        _measures(counts, len(words), body, recipients).items(), weights, means, scales
    )
    logit = float(model["intercept"]) + sum(contributions.values())  # type: ignore[arg-type]
    probability = 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, logit))))
    strongest = sorted(contributions.items(), key=itemgetter(1), reverse=True)[:5]  # stable
    return PersonalScore(probability, tuple((n, round(v, 2)) for n, v in strongest if v > 0))


def _contributions(
    found: Iterable[tuple[str, float]],
    weights: dict[str, float],
    means: dict[str, float],
    scales: dict[str, float],
) -> dict[str, float]:
    result: dict[str, float] = {}
    for name, value in found:
        weight = weights.get(name)
        if weight is None:
            continue
        if name in scales:  # continuous features were standardized for training
            value = (value - means[name]) / scales[name]
        result[name] = weight * value
    return result
