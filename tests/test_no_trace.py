"""Promise 1: a dropped message leaves nothing but a content-free decision record."""

from __future__ import annotations

import logging
import uuid

import pytest
import sqlalchemy as sa

from app.models import DecisionRecord
from tests.conftest import Running, add_employee, everything_stored
from tests.mail import compose, send


def test_dropped_internal_message_leaves_no_trace_in_files_tables_or_logs(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_employee(running.runtime.sessions, "alice@example.com")
    kept, dropped = f"k{uuid.uuid4().hex}", f"d{uuid.uuid4().hex}"
    business = compose(subject=f"Offer {kept}", message_id=f"<{kept}@example.com>")
    personal = compose(
        sender=f"Alice {dropped}First <alice@example.com>",
        to=f"Partner {dropped}Name <{dropped}addr@example.com>",
        subject=f"Dinner on Friday? {dropped}SUBJ",
        body=f"Love you, see you at home. {dropped}BODY\n",
        message_id=f"<{dropped}MID@example.com>",
    )

    assert send(running.smtp_port, business)[0] == 250
    assert send(running.smtp_port, personal)[0] == 250

    stored = everything_stored(running)
    assert kept.encode() in stored, "control: captured content must be findable by this scan"
    assert dropped.encode() not in stored
    assert dropped not in caplog.text
    with running.runtime.sessions() as session:
        outcomes = session.scalars(sa.select(DecisionRecord.outcome).order_by(DecisionRecord.id))
        assert list(outcomes) == ["capture", "drop"]
