"""The bundled, published policy end to end: personal mail leaves no trace, business is kept."""

from __future__ import annotations

import csv
import logging
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from app.models import DecisionRecord
from app.security import Role
from app.settings import BUNDLED_POLICY, Settings
from capture.pipeline import Envelope
from policies.model import Channel
from tests.conftest import (
    CORPORA,
    FIXTURES,
    Running,
    add_employee,
    everything_stored,
    issue_token,
    run_service,
)
from tests.mail import compose, send

PERSONAL_NOTES = [
    (
        "Saturday!!",
        "Hey sweetie, I miss you so much! The kids loved the birthday party and "
        "mum says thanks for the cake. Love you, see you at home tonight xoxo",
    ),
    (
        "Sunday dinner",
        "Hi mum, are we still on for dinner on Sunday? Dad said he'd bring the "
        "dog. Can't wait to see you all, hugs",
    ),
    (
        "get well soon",
        "Mum, so sorry to hear about your surgery. The kids and I are thinking "
        "of you and praying for a quick recovery. Love and hugs from all of us",
    ),
]


@pytest.fixture
def published(settings: Settings) -> Iterator[Running]:
    with run_service(settings.model_copy(update={"policy": BUNDLED_POLICY})) as service:
        add_employee(service.runtime.sessions, "alice@example.com", name="Alice Example")
        yield service


def test_personal_notes_to_an_outside_address_leave_no_trace_anywhere(
    published: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = []
    for subject, body in PERSONAL_NOTES:
        token = f"t{uuid.uuid4().hex}"
        tokens.append(token)
        msg = compose(
            sender=f"Alice {token}Sig <alice@example.com>",
            to=f"Sam {token}Name <{token}@friends.example>",
            subject=f"{subject} {token}",
            body=f"{body}\n{token}\n",
            message_id=f"<{token}@example.com>",
        )
        assert send(published.smtp_port, msg)[0] == 250

    stored = everything_stored(published)
    for token in tokens:
        at = stored.find(token.encode())
        assert at < 0, stored[max(0, at - 300) : at + 100]
        assert token not in caplog.text
    with published.runtime.sessions() as session:
        outcomes = session.scalars(sa.select(DecisionRecord.outcome)).all()
        rules = session.scalars(sa.select(DecisionRecord.rules)).all()
    assert outcomes == ["drop"] * len(PERSONAL_NOTES)
    assert all(r == ["personal-content"] for r in rules)


def test_mail_marked_private_is_dropped_by_the_guardrail(published: Running) -> None:
    raw = (FIXTURES / "private.eml").read_bytes().replace(b"\n", b"\r\n")
    result = published.runtime.pipeline.process(raw, Envelope("alice@example.com"), Channel.BCC)
    assert (result.outcome.value, result.rules) == ("drop", ("marked-private",))


def test_a_clear_business_message_is_kept_and_filed(published: Running) -> None:
    raw = (FIXTURES / "business.eml").read_bytes().replace(b"\n", b"\r\n")
    result = published.runtime.pipeline.process(raw, Envelope("alice@example.com"), Channel.BCC)
    assert result.outcome.value in ("capture", "metadata_only")
    assert result.message_id is not None


@pytest.mark.parametrize("channel", [Channel.IMAP, Channel.IMPORT, Channel.BCC])
def test_explain_says_what_a_message_from_that_channel_is_decided(
    published: Running, channel: Channel
) -> None:
    """A mailbox's spam verdict counts (our own servers wrote it); a BCC'd copy's does not."""
    raw = compose(
        sender="Bob Builder <bob@customer.example>",
        to="Alice Example <alice@example.com>",
        headers={"X-Spam-Flag": "YES", "X-Spam-Status": "Yes, score=9.1"},
        message_id=f"<spam-{channel.value}@customer.example>",
    ).as_bytes()
    token = issue_token(published.runtime.sessions, Role.COMPLIANCE)
    with published.client(token) as api:
        explained = api.post(
            "/api/v1/explain",
            content=raw,
            params={"employee": "alice@example.com", "channel": channel.value},
            headers={"Content-Type": "message/rfc822"},
        ).json()
    live = published.runtime.pipeline.process(raw, Envelope("alice@example.com"), channel)

    assert (explained["outcome"], tuple(explained["rules"])) == (live.outcome.value, live.rules)
    assert ("upstream-spam" in live.rules) == (channel is not Channel.BCC)


def test_explain_says_what_mail_read_from_a_sent_folder_is_decided(published: Running) -> None:
    """Alice's own first message to a new customer, read from her Sent folder, is hers and
    outbound: a compliance officer asking why it was kept must get the decision it got."""
    raw = compose(
        sender="Alice Example <alice@example.com>",
        to="Dana New <dana@prospect.example>",
        subject="Quote for 20 licences",
        body="Hi Dana, here is the quote for 20 licences, valid until Friday. Regards, Alice",
        message_id="<sent-1@example.com>",
    ).as_bytes()
    token = issue_token(published.runtime.sessions, Role.COMPLIANCE)
    with published.client(token) as api:
        explained = api.post(
            "/api/v1/explain",
            content=raw,
            params={"employee": "alice@example.com", "channel": "imap", "sent": "true"},
            headers={"Content-Type": "message/rfc822"},
        ).json()
    sent = Envelope("alice@example.com", sent_folder=True)
    live = published.runtime.pipeline.process(raw, sent, Channel.IMAP)

    assert "unsolicited-inbound" not in live.rules
    assert (explained["outcome"], tuple(explained["rules"])) == (live.outcome.value, live.rules)


def _enron(category: str) -> Iterator[bytes]:
    root = CORPORA / "enron-categories"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the public corpora live in ../shared (CI has them)")
    with (root / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["majority"] == category:
                yield (root / "messages" / row["folder"] / f"{row['id']}.txt").read_bytes()


def test_no_purely_personal_enron_message_is_captured_with_content(
    published: Running,
) -> None:
    pipeline = published.runtime.pipeline
    pipeline.org_domains = frozenset({"mailroom-bench.invalid"})
    outcomes = [
        pipeline.explain(raw, Envelope(""), Channel.BCC).decision.outcome.value
        for raw in _enron("1.2")
    ]
    assert outcomes and "capture" not in outcomes
