"""Fixtures for IMAP tests: one real Dovecot per test session, a fresh user per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dovecot import Dovecot, available, run_dovecot


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    if not available():
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    # Not under pytest's tmp_path: its parents are closed to the unprivileged server user.
    directory = Path(tempfile.mkdtemp(prefix="mailroom-dovecot."))
    try:
        with run_dovecot(directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def imap_user() -> str:
    """A user of its own for each test: Dovecot creates the mailbox on first login."""
    return f"u{uuid.uuid4().hex[:10]}@example.com"
