"""Headers first: a decision taken on the header section alone is final only when the body
could not have changed it; then the whole message decides the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, session_factory
from app.settings import BUNDLED_POLICY
from capture.parse import parse_headers, parse_message
from capture.pipeline import BodyNeededError, Envelope, Pipeline, Result
from policies.loader import load_policy
from policies.model import Channel
from tests.conftest import CORPORA, FIXTURES, TEST_SECRET, add_employee

ALICE = "alice@example.com"


@pytest.fixture
def pipeline(database_url: str) -> Iterator[Pipeline]:
    engine = make_engine(database_url)
    sessions: sessionmaker[Session] = session_factory(engine)
    add_employee(sessions, ALICE, name="Alice Example")
    yield Pipeline(
        sessions,
        load_policy(BUNDLED_POLICY),
        org_domains=frozenset({"example.com"}),
        secret=TEST_SECRET.encode(),
    )
    engine.dispose()


def header_section(raw: bytes) -> bytes:
    raw = raw.replace(b"\r\n", b"\n")
    head, _, _ = raw.partition(b"\n\n")
    return head + b"\n\n"


def decide(pipeline: Pipeline, raw: bytes, *, sent: bool, headers_only: bool) -> Result | None:
    """The decision, in a transaction that is rolled back; None when the body is needed."""
    envelope = Envelope(mail_from=ALICE, sent_folder=sent)
    message = (
        parse_headers(header_section(raw), size=len(raw)) if headers_only else parse_message(raw)
    )
    with pipeline.sessions() as session:
        try:
            return pipeline.process_in(
                session, message, envelope, Channel.IMAP, headers_only=headers_only
            )
        except BodyNeededError:
            return None
        finally:
            session.rollback()


def test_newsletter_is_dropped_on_its_headers(pipeline: Pipeline) -> None:
    raw = (FIXTURES / "newsletter.eml").read_bytes()
    result = decide(pipeline, raw, sent=False, headers_only=True)
    assert result is not None and result.outcome.value == "drop"


def test_personal_note_sent_to_a_customer_needs_its_body(pipeline: Pipeline) -> None:
    raw = (FIXTURES / "personal.eml").read_bytes()
    assert decide(pipeline, raw, sent=True, headers_only=True) is None
    full = decide(pipeline, raw, sent=True, headers_only=False)
    assert full is not None and full.outcome.value == "drop"


def test_a_bounce_found_only_in_its_body_is_not_settled_on_headers(pipeline: Pipeline) -> None:
    raw = (FIXTURES / "bounce_qmail.eml").read_bytes()
    settled = decide(pipeline, raw, sent=False, headers_only=True)
    full = decide(pipeline, raw, sent=False, headers_only=False)
    assert full is not None
    assert settled is None or settled.rules == full.rules


def _samples() -> list[Path]:
    found = sorted(FIXTURES.glob("*.eml"))
    for folder in ("enron-categories/messages", "spamassassin/messages", "bounces/messages"):
        files = sorted(p for p in (CORPORA / folder).rglob("*") if p.is_file())
        found += [p for p in files if not p.name.endswith(".cats")][::15]
    return found


def test_every_decision_settled_on_headers_is_the_decision_of_the_whole_message(
    pipeline: Pipeline,
) -> None:
    samples = _samples()
    if len(samples) < 100:
        pytest.skip(f"{CORPORA} is absent: only the fixtures would be checked")
    settled = 0
    for path in samples:
        raw = path.read_bytes()
        for sent in (False, True):
            header = decide(pipeline, raw, sent=sent, headers_only=True)
            if header is None:
                continue
            settled += 1
            full = decide(pipeline, raw, sent=sent, headers_only=False)
            assert full is not None
            assert (header.outcome, header.rules) == (full.outcome, full.rules), path
    assert settled > len(samples) // 2  # the point: most mail never needs its body
