"""Held messages wait for review for the policy's period, then are removed; decisions stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.db import transaction
from app.models import DecisionRecord, Message
from app.retention import purge_expired_holds
from capture.pipeline import Envelope
from policies.model import Channel
from tests.conftest import Running, add_employee
from tests.mail import compose


def test_a_held_message_is_removed_after_its_review_period(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    note = compose(to="Alice <alice@example.com>", message_id="<note-to-self@example.com>")
    result = running.runtime.pipeline.process(
        note.as_bytes(), Envelope("alice@example.com"), Channel.BCC
    )
    assert result.outcome.value == "hold"

    with transaction(running.runtime.sessions) as session:
        early = purge_expired_holds(session, datetime.now(UTC) + timedelta(days=6))
    with transaction(running.runtime.sessions) as session:
        late = purge_expired_holds(session, datetime.now(UTC) + timedelta(days=8))

    assert (early, late) == (0, 1)
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 1
