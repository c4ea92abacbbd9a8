"""Headers first: a decision taken on the header section alone is final only when the body
could not have changed it; then the whole message decides the same way. The one exception is
mail dropped either way: the body is not read to learn which of two dropping rules applies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, session_factory
from app.models import Contact
from app.policy_versions import simulate
from app.settings import BUNDLED_POLICY
from capture.bounces import bounced_recipients
from capture.parse import parse_headers, parse_message
from capture.pipeline import BodyNeededError, Envelope, Pipeline, Result
from policies.loader import load_policy, load_policy_text
from policies.model import Channel, Outcome
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


def test_list_mail_that_looks_like_a_bounce_is_dropped_without_its_body(pipeline: Pipeline) -> None:
    """Whether the body shows a delivery report or not, the list mail is dropped: the policy
    drops both, so the body is never downloaded, and the record names what the headers show."""
    raw = (FIXTURES / "newsletter.eml").read_bytes()
    raw = raw.replace(b"Subject: November product update", b"Subject: Build error digest")
    header = decide(pipeline, raw, sent=False, headers_only=True)
    full = decide(pipeline, raw, sent=False, headers_only=False)

    assert header is not None and full is not None
    assert (header.outcome.value, header.rules) == ("drop", ("bulk-list-mail",))
    assert (full.outcome, full.rules) == (header.outcome, header.rules)


def test_a_bounce_that_could_also_be_kept_needs_its_body(pipeline: Pipeline) -> None:
    """A bounce-looking message no later rule drops on its headers: the body decides."""
    raw = (FIXTURES / "newsletter.eml").read_bytes()
    raw = raw.replace(b"Subject: November product update", b"Subject: Build error digest")
    for header in (b"List-Id", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Precedence"):
        raw = b"\n".join(line for line in raw.split(b"\n") if not line.startswith(header + b":"))
    assert decide(pipeline, raw, sent=False, headers_only=True) is None


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
    settled = renamed = 0
    order = {rule.id: n for n, rule in enumerate(pipeline.engine.policy.policy.rules)}
    for path in samples:
        raw = path.read_bytes()
        for sent in (False, True):
            header = decide(pipeline, raw, sent=sent, headers_only=True)
            if header is None:
                continue
            settled += 1
            full = decide(pipeline, raw, sent=sent, headers_only=False)
            assert full is not None
            assert header.outcome == full.outcome, path
            if header.rules != full.rules:
                # Dropped either way: the body would only have named an earlier rule that
                # reads it (a delivery report under a list's or a no-reply sender's headers).
                assert header.outcome is Outcome.DROP, path
                assert order[full.rules[-1]] < order[header.rules[-1]], path
                renamed += 1
    assert settled > len(samples) // 2  # the point: most mail never needs its body
    assert renamed < settled // 50


EXIM_BOUNCE = (
    b"From: Mail Delivery System <Mailer-Daemon@mx.customer.example>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: Mail delivery failed: returning message to sender\r\n"
    b"Date: Tue, 24 Nov 2026 09:00:00 +0000\r\n"
    b"Message-ID: <exim-1@mx.customer.example>\r\n"
    b"Auto-Submitted: auto-replied\r\n"
    b"X-Failed-Recipients: bob@Customer.Example, carol@customer.example\r\n"
    b"\r\n"
    b"This message was created automatically by mail delivery software.\r\n"
)


def _bounce_samples() -> list[bytes]:
    found = [(FIXTURES / name).read_bytes() for name in ("bounce_dsn.eml", "bounce_qmail.eml")]
    found.append(EXIM_BOUNCE)
    for folder, step in (("bounces/messages", 1), ("spamassassin/messages", 7)):
        files = sorted(p for p in (CORPORA / folder).rglob("*") if p.is_file())
        found += [p.read_bytes() for p in files[::step] if not p.name.endswith(".cats")]
    return found


def test_a_header_section_names_the_same_bounced_recipients_whether_parsed_or_not() -> None:
    """The shortcut for a header section without X-Failed-Recipients gives what parsing it
    and asking every detector gives, on every bounce of the corpus (and a seventh of the
    SpamAssassin corpus, for reports that do not look like bounces)."""
    samples = _bounce_samples()
    named = 0
    for raw in samples:
        section = parse_headers(header_section(raw), size=len(raw))
        expected = bounced_recipients(section)
        assert bounced_recipients(section, headers_only=True) == expected
        named += bool(expected)
    assert named >= 1  # the Exim bounce, at least: its header names its recipients


def test_a_header_section_without_exims_header_is_not_parsed_for_recipients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(raw: bytes, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr("capture.bounces.parse_mime", refuse)
    dsn = (FIXTURES / "bounce_dsn.eml").read_bytes()
    section = parse_headers(header_section(dsn), size=len(dsn))
    assert bounced_recipients(section, headers_only=True) == frozenset()
    with pytest.raises(AssertionError, match="parsed"):
        bounced_recipients(section)  # the whole message, or a section read without the flag


def test_a_bounce_decided_on_its_headers_marks_the_recipients_its_headers_name(
    pipeline: Pipeline,
) -> None:
    section = parse_headers(header_section(EXIM_BOUNCE), size=len(EXIM_BOUNCE))
    with pipeline.sessions() as session:
        session.add(Contact(address="bob@customer.example", name="Bob"))
        session.flush()
        result = pipeline.process_in(
            session, section, Envelope(mail_from=ALICE), Channel.IMAP, headers_only=True
        )
        marked = session.scalars(sa.select(Contact.undeliverable_since)).all()
        session.rollback()
    assert result.outcome is Outcome.DROP
    assert marked == [datetime(2026, 11, 24, 9, tzinfo=UTC)]


KEPT_AS_METADATA = (
    (FIXTURES / "plumbing-policy.yaml")
    .read_text()
    .replace(
        "when: external-participant\n    outcome: capture",
        "when: external-participant\n    outcome: metadata_only",
    )
)
PERSONAL_FIRST = KEPT_AS_METADATA.replace(
    "rules:\n",
    "rules:\n  - id: personal-mail\n    description: Mail that reads as personal is dropped.\n"
    "    when: {personal-content: {above: 0.5}}\n    outcome: drop\n",
    1,
)


def test_simulate_does_not_read_a_subject_alone_as_the_text_of_mail_decided_on_headers(
    database_url: str,
) -> None:
    """A mailbox's message kept as metadata on its headers holds the personal probability of
    its subject alone: a candidate asking `personal-content` of it cannot be answered from
    the log (the listener would read the body), so it is not replayable, not `unchanged`."""
    engine = make_engine(database_url)
    sessions: sessionmaker[Session] = session_factory(engine)
    add_employee(sessions, ALICE, name="Alice Example")
    secret = TEST_SECRET.encode()
    raw = (FIXTURES / "personal.eml").read_bytes()
    pipeline = Pipeline(
        sessions,
        load_policy_text(KEPT_AS_METADATA),
        org_domains=frozenset({"example.com"}),
        secret=secret,
    )
    candidate = load_policy_text(PERSONAL_FIRST)
    try:
        with sessions() as session, session.begin():
            header = parse_headers(header_section(raw), size=len(raw))
            envelope = Envelope(mail_from=ALICE, sent_folder=True)
            kept = pipeline.process_in(session, header, envelope, Channel.IMAP, headers_only=True)
        pipeline.engine = candidate
        whole = decide(pipeline, raw, sent=True, headers_only=False)
        with sessions() as session:
            replayed = simulate(session, candidate, secret)
    finally:
        engine.dispose()

    assert (kept.outcome, whole and whole.outcome) == (Outcome.METADATA_ONLY, Outcome.DROP)
    assert (replayed.evaluated, replayed.not_replayable) == (0, 1)
