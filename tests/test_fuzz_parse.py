"""Robustness: random, mutated and hostile messages through parse, extraction and the policy.

No exception may escape and nothing may hang: hypothesis' deadline fails any example that takes
longer than DEADLINE (generous, for a shared two-core machine; a hang or a quadratic blow-up on
these bounded inputs exceeds it by far). Runs are derandomized so that CI is repeatable;
MAILROOM_FUZZ_EXAMPLES=N runs N fresh random examples per test instead."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import cache

import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from app.settings import BUNDLED_POLICY
from capture.content import message_content
from capture.parse import ParsedMessage, parse_message, parse_message_and_mime
from capture.people import people, person
from capture.signatures import extract_signature, region_for_domain
from capture.threads import thread_key
from policies.engine import Engine
from policies.loader import load_policy
from policies.model import Channel
from policies.observe import Context, Submitter
from tests.conftest import CORPORA, FIXTURES

DEADLINE = timedelta(seconds=2)
DAY = timedelta(hours=23, minutes=59)  # the largest time zone offset there is, nearly
# MAILROOM_FUZZ_EXAMPLES=5000 explores further, with fresh random examples each run.
EXPLORE = int(os.environ.get("MAILROOM_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXPLORE or 150, deadline=DEADLINE, derandomize=not EXPLORE, database=None
)
ALICE = Submitter(employee_id=1, addresses=frozenset({"alice@example.com"}), family_name="example")
HEADER_NAMES = (
    "From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "In-Reply-To",
    "References", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
    "MIME-Version", "Auto-Submitted", "List-Id", "Precedence", "Sensitivity", "X-Spam-Flag",
)  # fmt: skip
TRICKY = (
    '"', "<", ">", "(", ")", ",", ";", ":", "@", "\\", "=?", "?=", "=?utf-8?q?", "=?utf-8?b?",
    "=?x-unknown?q?", "''", "*0*=", "boundary=", "multipart/mixed", "text/html", "charset=",
    "base64", "quoted-printable", "\t", " ", "\r\n ", "--", "Re:", "\u00e9", "\u0000",
    "\udcff", "a@b.com", "xn--", "..", "[", "]", "Mon, 23 Nov 2026 ", "99999999999999999999",
    "+0000", "-- \r\n", "Regards,\r\n", "Tel: +1 415 555 0100\r\n", "> ",
)  # fmt: skip


@cache
def engine() -> Engine:
    return load_policy(BUNDLED_POLICY)


@cache
def real_messages() -> tuple[bytes, ...]:
    fixtures = [p.read_bytes().replace(b"\n", b"\r\n") for p in sorted(FIXTURES.glob("*.eml"))]
    corpus = sorted((CORPORA / "spamassassin" / "messages").glob("*/*.txt"))[::150]
    return (*fixtures, *(p.read_bytes() for p in corpus))


def understand(raw: bytes) -> ParsedMessage:
    """Everything Mailroom does with a message before filing it."""
    message, mime = parse_message_and_mime(raw)
    assert parse_message(raw) == message
    content = message_content(mime)
    found = people(message, exclude=ALICE.addresses)
    sender = person(message.sender) if message.sender else None
    extract_signature(
        content.text,
        sender_name=message.sender.name if message.sender else "",
        company_hint=sender.company.name if sender and sender.company else "",
        region=region_for_domain(sender.domain) if sender else None,
    )
    extract_signature(message.text)
    thread_key(message)
    context = Context(
        channel=Channel.BCC,
        org_domains=frozenset({"example.com"}),
        submitter=ALICE,
        known_contacts=frozenset(p.key for p in found),
        now=datetime(2026, 11, 23, tzinfo=UTC),
        secret=b"fuzz",
        from_employee=True,
    )
    decision, _ = engine().decide(message, context)
    assert decision.outcome is not None
    assert_storable(message)
    return message


def assert_storable(message: ParsedMessage) -> None:
    """What filing stores, any database can: an instant in Python's range in UTC and in any
    time zone (a day either way); and text without NUL, which PostgreSQL refuses."""
    if message.date is not None:
        for offset in (-DAY, timedelta(0), DAY):
            message.date.astimezone(timezone(offset))
    texts = [message.subject, message.text, message.message_id or "", message.in_reply_to or ""]
    texts += [*message.references, *(value for _, value in message.headers)]
    texts += [f"{a.address}{a.name}" for a in message.participants]
    texts += [f"{a.filename}{a.content_type}" for a in message.attachments]
    assert not [text for text in texts if "\x00" in text]


def safe(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


headers = st.lists(
    st.tuples(
        st.sampled_from(HEADER_NAMES),
        st.lists(st.sampled_from(TRICKY) | st.text(max_size=20), max_size=30).map("".join),
    ),
    max_size=15,
)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(raw: bytes) -> None:
    understand(raw)


@FUZZ
@given(headers, st.text(max_size=2000))
def test_random_headers_and_bodies_never_raise(fields: list[tuple[str, str]], body: str) -> None:
    head = b"".join(safe(f"{name}: {value}") + b"\r\n" for name, value in fields)
    understand(head + b"\r\n" + safe(body))


@FUZZ
@given(st.data())
def test_mutated_real_messages_never_raise(data: st.DataObject) -> None:
    messages = real_messages()
    raw = bytearray(messages[data.draw(st.integers(0, len(messages) - 1), label="message")])
    for _ in range(data.draw(st.integers(1, 20), label="mutations")):
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        action = data.draw(st.sampled_from(("flip", "insert", "delete", "cut", "repeat")))
        chunk = safe(data.draw(st.sampled_from(TRICKY)))
        if action == "flip" and raw:
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            raw[at:at] = chunk
        elif action == "delete":
            del raw[at : at + data.draw(st.integers(1, 50))]
        elif action == "cut":
            del raw[at:]
        else:
            raw[at:at] = chunk * data.draw(st.integers(1, 2000))
    understand(bytes(raw))


BASE = b"From: Alice <alice@example.com>\r\nTo: bob@customer.example\r\nSubject: hi\r\n"


def nested(depth: int) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return (
        BASE + b"MIME-Version: 1.0\r\n" + opening + b"Content-Type: text/plain\r\n\r\nhi" + closing
    )


BOMBS: dict[str, Callable[[], bytes]] = {
    "thousands of headers": lambda: (
        BASE + b"".join(b"X-Header-%d: value\r\n" % i for i in range(20_000)) + b"\r\nbody\r\n"
    ),
    "1 MB subject line": lambda: (
        BASE.replace(b"Subject: hi", b"Subject: " + b"x" * 1_000_000) + b"\r\nbody\r\n"
    ),
    "1 MB To of addresses": lambda: (
        b"From: a@example.com\r\nTo: "
        + b", ".join(b"user%d@customer.example" % i for i in range(50_000))
        + b"\r\n\r\nbody\r\n"
    ),
    "1 MB To of quotes": lambda: b"From: a@example.com\r\nTo: " + b'"' * 1_000_000 + b"\r\n\r\nx",
    "From of angle brackets": lambda: b"From: " + b"<" * 200_000 + b"\r\n\r\nbody\r\n",
    "Content-Type of empty parameters": lambda: (
        BASE + b"Content-Type: text/plain" + b"; " * 7_000 + b"\r\n\r\nbody\r\n"
    ),
    "Content-Type of parameters": lambda: (
        BASE
        + b"Content-Type: text/plain"
        + b"".join(b"; p%d=v" % i for i in range(3_000))
        + b"\r\n\r\nbody\r\n"
    ),
    "20,000 parts": lambda: (
        BASE
        + b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        + b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n" * 20_000
        + b"--x--\r\n"
    ),
    "nested 50 deep": lambda: nested(50),
    "nested 3,000 deep": lambda: nested(3_000),
    "encoded words": lambda: (
        BASE.replace(b"Subject: hi", b"Subject: " + b"=?utf-8?q?a?= " * 50_000) + b"\r\nbody\r\n"
    ),
}


@settings(deadline=DEADLINE, phases=[Phase.explicit], database=None)
@given(st.sampled_from(sorted(BOMBS)))
@example("thousands of headers")
@example("1 MB subject line")
@example("1 MB To of addresses")
@example("1 MB To of quotes")
@example("From of angle brackets")
@example("Content-Type of empty parameters")
@example("Content-Type of parameters")
@example("20,000 parts")
@example("nested 50 deep")
@example("nested 3,000 deep")
@example("encoded words")
def test_header_bombs_parse_quickly_with_defects_recorded(name: str) -> None:
    message = understand(BOMBS[name]())
    assert len(message.headers) <= 500
    assert len(message.subject) <= 998
    assert len(message.to) <= 500


def test_absurd_nesting_is_a_recorded_defect_not_an_error() -> None:
    message = parse_message(nested(3_000))
    assert "too-many-multiparts" in message.defects
    assert message.sender is not None and message.sender.address == "alice@example.com"
    assert "too-many-multiparts" not in parse_message(nested(5)).defects
    assert parse_message(nested(5)).text == "hi"


def test_a_content_type_bomb_keeps_the_type() -> None:
    message = parse_message(BOMBS["Content-Type of empty parameters"]())
    assert message.content_types == ("text/plain",)
    assert message.text == "body\r\n".replace("\r\n", "\n")


def test_an_address_header_bomb_keeps_the_first_mailboxes() -> None:
    message = parse_message(BOMBS["1 MB To of addresses"]())
    assert len(message.to) == 500
    assert message.to[0].address == "user0@customer.example"
    assert parse_message(BOMBS["1 MB To of quotes"]()).to == ()


def test_an_encoded_word_with_an_8bit_charset_name_is_a_defect() -> None:
    # Found by bench/fuzz_parse.py: email.header raised CharsetError out of parse_message.
    raw = b"From: a@example.com\r\nSubject: =?x-\xcfo-such-charset?q?Fran=E7ois?=\r\n\r\nhi"
    message = understand(raw)
    assert "undecodable-header:subject" in message.defects


def test_a_date_beyond_any_calendar_is_no_date() -> None:
    # Found by bench/fuzz_parse.py: parsedate_to_datetime raised OverflowError.
    raw = b"From: a@example.com\r\nDate: Mon, 23 Nov 99999999999999999999 09:00:00 +0000\r\n\r\nhi"
    assert understand(raw).date is None


@pytest.mark.parametrize(
    "written",
    [
        "Fri, 31 Dec 9999 23:00:00 -1200",  # 1 Jan 10000 in UTC: stored, it overflowed
        "Fri, 31 Dec 9999 00:00:00 +0000",  # the last day: some time zones cannot show it
    ],
)
def test_a_date_beyond_what_databases_store_is_no_date_and_a_defect(written: str) -> None:
    message = understand(f"From: a@example.com\r\nDate: {written}\r\n\r\nhi".encode())
    assert message.date is None
    assert "date-out-of-range" in message.defects


def test_nul_in_any_text_kept_becomes_a_replacement_character() -> None:
    raw = (
        b"From: =?utf-8?q?Bo=00b?= <bob@example.com>\r\nTo: Ca\x00rol <carol@example.com>\r\n"
        b"Subject: a\x00b\r\nMessage-ID: <n\x00ul@example.com>\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nbo\x00dy\r\n--b\r\n"
        b'Content-Disposition: attachment; filename="q\x00.pdf"\r\n\r\n%PDF\r\n--b--\r\n'
    )
    message = understand(raw)
    assert (message.subject, message.text.strip()) == ("a\ufffdb", "bo\ufffddy")
    assert [a.name for a in message.participants] == ["Bo\ufffdb", "Ca\ufffdrol"]
    assert message.message_id == "<n\ufffdul@example.com>"
    assert message.attachments[0].filename == "q\ufffd.pdf"


def test_the_earliest_date_the_stdlib_reads_is_kept() -> None:
    raw = b"From: a@example.com\r\nDate: Mon, 1 Jan 0100 00:00:00 +0100\r\n\r\nhi"
    assert understand(raw).date == datetime(99, 12, 31, 23, tzinfo=UTC)
