"""The personal-words model as applied: the same score as the model over its training
features, and a score worked out ahead stands only for its own text."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from capture.parse import parse_message
from policies import personal_words
from policies.observe import probability_fact
from policies.personal_words import (
    EMOTICON,
    PersonalScore,
    features,
    score_personal,
)
from tests.conftest import CORPORA, FIXTURES
from tests.test_predicates import observed

# The pattern as first written: two alternatives, case-blind.
CASE_BLIND_EMOTICON = re.compile(r"[:;]-?[)(dp]|<3", re.IGNORECASE)
TEXT = st.text(alphabet=":;-()dDpP<3 xXéK!'\nlovemeetingi", max_size=200)


def model_over_features(subject: str, body: str, recipients: int) -> PersonalScore:
    """The model's definition: every feature `features` names, weighed in its order."""
    model = personal_words._model()
    weights: dict[str, float] = model["weights"]  # type: ignore[assignment]
    means: dict[str, float] = model["means"]  # type: ignore[assignment]
    scales: dict[str, float] = model["scales"]  # type: ignore[assignment]
    contributions: dict[str, float] = {}
    for name, value in features(subject, body, recipients=recipients).items():
        if name in weights:
            standardized = (value - means[name]) / scales[name] if name in scales else value
            contributions[name] = weights[name] * standardized
    logit = float(model["intercept"]) + sum(contributions.values())  # type: ignore[arg-type]
    probability = 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, logit))))
    strongest = sorted(contributions.items(), key=lambda item: -item[1])[:5]
    return PersonalScore(probability, tuple((n, round(v, 2)) for n, v in strongest if v > 0))


@given(TEXT)
@example(":) :-( ;D :p <3 <<3 :-- ;;P")
def test_the_emoticon_pattern_counts_as_the_case_blind_one(text: str) -> None:
    assert EMOTICON.findall(text) == CASE_BLIND_EMOTICON.findall(text)
    # And the feature counts them, also where it skips the pattern for text without : ; <
    counted = personal_words._measures(Counter(), 0, text, 1)["style:emoticons"]
    assert counted == len(CASE_BLIND_EMOTICON.findall(text))


@given(st.text(max_size=40), TEXT, st.integers(min_value=0, max_value=60))
@example("Dinner", "love you, see you tonight :) xoxo", 1)
def test_the_score_is_the_model_over_its_features(subject: str, body: str, n: int) -> None:
    assert score_personal(subject, body, recipients=n) == model_over_features(subject, body, n)


def test_the_score_is_the_model_over_its_features_on_fixtures_and_corpus() -> None:
    paths = sorted(FIXTURES.glob("*.eml"))
    if CORPORA.is_dir():
        paths += sorted(CORPORA.glob("enron-categories/messages/*/*.txt"))
    for path in paths:
        message = parse_message(path.read_bytes())
        for n in (0, len(message.recipients)):
            expected = model_over_features(message.subject, message.text, n)
            assert score_personal(message.subject, message.text, recipients=n) == expected, path


@pytest.mark.parametrize("name", ["personal.eml", "business.eml", "family.eml"])
def test_the_probability_in_the_facts_is_the_score(name: str) -> None:
    message = parse_message((FIXTURES / name).read_bytes().replace(b"\n", b"\r\n"))
    score = score_personal(message.subject, message.text, recipients=len(message.recipients))
    facts = observed(name).facts
    assert facts["personal_probability"] == probability_fact(score.probability)
    assert facts["personal_probability"] <= score.probability < facts["personal_probability"] + 1e-4
