"""A mailbox sync's header sections parsed in a helper process: the same messages as parsed
here, and a helper that dies costs nothing but the time to parse here."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from capture.frames import frame
from capture.header_helper import PARSE_ELSEWHERE, HeaderParsing, Sections
from capture.parse import parse_headers
from policies.observe import work_ahead
from tests.conftest import CORPORA, FIXTURES


def _sections() -> Sections:
    paths = sorted(FIXTURES.glob("*.eml"))
    if CORPORA.is_dir():
        paths += sorted(CORPORA.glob("*/messages/**/*.txt"))[:2000]
    found: Sections = []
    for uid, path in enumerate(paths, 1):
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        end = raw.find(b"\r\n\r\n")
        found.append((uid, raw[: end + 4] if end >= 0 else raw, len(raw)))
    while len(found) < PARSE_ELSEWHERE:  # without the corpora: enough for the helper
        found += [(uid + len(found), header, size) for uid, header, size in found]
    return found


@pytest.fixture
def parsing() -> Iterator[HeaderParsing]:
    helper = HeaderParsing()
    yield helper
    helper.close()


def _helper_pid(parsing: HeaderParsing) -> int | None:
    return parsing._helper[0].pid if parsing._helper else None


def test_the_helper_gives_the_messages_parsed_here(parsing: HeaderParsing) -> None:
    sections = _sections()

    parsed = parsing.parse(sections)

    pid = _helper_pid(parsing)
    assert pid is not None and pid != os.getpid()
    assert len(parsed) == len(sections)
    for (uid, header, size), (got_uid, message, got_size, ahead) in zip(
        sections, parsed, strict=True
    ):
        assert (got_uid, got_size) == (uid, size)
        expected = parse_headers(header, size=size)
        assert message == expected and message.raw == header, uid
        assert repr(message.date) == repr(expected.date), uid
        # And what it worked out from the message alone is what observe works out here.
        assert ahead is not None and ahead.stands_for(message), uid
        assert ahead.values() == work_ahead(expected).values(), uid


def test_a_small_batch_is_parsed_here(parsing: HeaderParsing) -> None:
    sections = _sections()[: PARSE_ELSEWHERE - 1]

    parsed = parsing.parse(sections)

    assert _helper_pid(parsing) is None
    assert [m for _, m, _, _ in parsed] == [parse_headers(h, size=n) for _, h, n in sections]


def test_a_helper_that_died_costs_one_batch_parsed_here_then_another_starts(
    parsing: HeaderParsing,
) -> None:
    sections = _sections()
    expected = [parse_headers(h, size=n) for _, h, n in sections]
    parsing.parse(sections)
    first = _helper_pid(parsing)
    assert first is not None
    os.kill(first, signal.SIGKILL)

    after_death = parsing.parse(sections)
    again = parsing.parse(sections)

    assert [m for _, m, _, _ in after_death] == expected == [m for _, m, _, _ in again]
    assert _helper_pid(parsing) not in (None, first)


def test_closing_stops_the_helper(parsing: HeaderParsing) -> None:
    parsing.parse(_sections())
    helper = parsing._helper
    assert helper is not None

    parsing.close()

    assert helper[0].poll() == 0, "the helper exits when its socket closes"
    assert parsing._helper is None


def test_a_helper_that_fails_says_only_what_kind_of_error_and_the_batch_is_parsed_here(
    parsing: HeaderParsing, capfd: pytest.CaptureFixture[str]
) -> None:
    sections = _sections()
    parsing.parse(sections)
    helper = parsing._helper
    assert helper is not None
    secret = "Subject: do not log me"
    helper[1].sendall(frame([(secret, "not a size")]))  # what no batch ever is

    assert helper[0].wait(timeout=30) == 1
    parsed = parsing.parse(sections)  # the unread answer is gone with the helper

    assert [m for _, m, _, _ in parsed] == [parse_headers(h, size=n) for _, h, n in sections]
    errors = capfd.readouterr().err
    assert "header parsing helper failed (" in errors
    assert "do not log me" not in errors and "Traceback" not in errors
