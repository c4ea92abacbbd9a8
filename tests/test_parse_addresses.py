"""Parse: the quick paths read mail exactly as the standard library does: plain address headers
as the header registry, header sections as compat32's parser."""

from __future__ import annotations

from email import policy
from email.message import Message
from email.parser import BytesParser

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from capture.parse import (
    _DOMAIN,
    _POLICY,
    _mailboxes,
    _single_part,
    earlier_spelling,
    header_section,
    normalize_address,
)
from capture.people import _valid
from tests.conftest import CORPORA

ADDRESS_HEADERS = ("from", "to", "cc", "reply-to")


def registry(name: str, value: str) -> list[tuple[str, str]]:
    """What policy.default's header parser makes of one header value."""
    header = policy.default.header_factory(name, value)
    return [(f"{m.username}@{m.domain}", m.display_name) for m in header.addresses]


@pytest.mark.parametrize(
    "value",
    [
        "alice@example.com",
        "Alice Example <alice@example.com>",
        "  J. R. O'Brien-Smith   <j.r+crm@sub.example.co.uk>  ",
        "<bare@example.com>",
        '"Doe, John" <john@example.com>',
        '"jobfair24 " <news@example.de>',  # the registry keeps a quoted name's spaces
        '"Mr. O\'Brien (work) x@y" <ob@example.com>',
        '"" <empty@example.com>',
        '"=?utf-8?q?J=C3=BCrgen?=" <jurgen@example.de>',  # decoded: the registry reads it
        '"a \\"quoted\\" word" <q@example.com>',
        "alice@example.com, bob@example.com",
        "Alice <alice@example.com> (work)",
        "=?utf-8?q?J=C3=BCrgen?= <jurgen@example.de>",
        "Undisclosed recipients:;",
        "Bob <bob@example.com>, Carol <carol@example.com>",
        "Mallory <mallory@evil.example>@example.com",
        "alice@example.com <bob@example.com>",
        "nicholas.o'day@enron.com",  # the quick path reads apostrophes and stray dots too
        "John <w..cantrell@enron.com>",
        "a.@example.com",
        "legal <.hall@enron.com>",
        "harley@argote.ch (Robert Harley)",  # a trailing comment is no display name
        "a@example.com (O'Brien, J.) ",
        "a@example.com (Robert (nested) Harley)",
        "a@example.com (=?utf-8?q?J=C3=BCrgen?=)",
    ],
)
def test_quick_and_registry_parsers_agree(value: str) -> None:
    assert _mailboxes(value, "to", []) == registry("to", value)


@given(st.text(alphabet=[chr(c) for c in range(32, 127)], max_size=110))
def test_quick_and_registry_parsers_agree_on_quoted_names(name: str) -> None:
    value = '"' + name.replace("\\", "").replace('"', "") + '" <someone@example.com>'
    assert _mailboxes(value, "to", []) == registry("to", value)


@given(st.text(alphabet=[chr(c) for c in range(32, 127)], max_size=60))
def test_quick_and_registry_parsers_agree_on_trailing_comments(comment: str) -> None:
    value = f"someone@example.com ({comment})"
    try:
        expected = registry("to", value)
    except Exception:  # the registry refuses it: so must the quick path
        expected = []
    assert _mailboxes(value, "to", []) == expected


@given(
    st.text(alphabet="a'.-_+=%", min_size=1, max_size=70),
    st.sampled_from(["{}@x.com", "Jo <{}@x.com>", "<{}@x.com>", '"J, D" <{}@x.co>', "{}@x..com"]),
)
def test_quick_and_registry_parsers_agree_on_odd_local_parts(local: str, form: str) -> None:
    value = form.format(local)
    try:
        expected = registry("to", value)
    except Exception:  # the registry refuses it: so must the quick path
        expected = []
    assert _mailboxes(value, "to", []) == expected


def test_quick_and_registry_parsers_agree_on_every_corpus_header() -> None:
    if not CORPORA.is_dir():
        pytest.skip("../shared/corpora is absent (a fresh clone); CI always has it")
    parser = BytesParser(policy=policy.compat32)
    checked = 0
    paths = [*CORPORA.glob("*/messages/**/*.eml"), *CORPORA.glob("*/messages/**/*.txt")]
    for path in sorted(paths):
        message = parser.parsebytes(path.read_bytes(), headersonly=True)
        for name in ADDRESS_HEADERS:
            for value in message.get_all(name, []):
                try:
                    expected = registry(name, str(value))
                except Exception:  # the registry refuses it: so must the quick path
                    assert _mailboxes(str(value), name, []) == []
                    continue
                assert _mailboxes(str(value), name, []) == expected, value
                checked += 1
    assert checked > 1000


def stdlib_header_section(header: bytes) -> tuple[object, ...]:
    message = BytesParser(policy=_POLICY).parsebytes(header, headersonly=True)
    return fields_of(message)


def fields_of(message: Message) -> tuple[object, ...]:
    defects = [type(d).__name__ for d in message.defects]
    return list(message.raw_items()), defects, message.get_unixfrom(), message.get_content_type()


LINE_PIECES = [b"From ", b"From: a@b.example", b"To", b":", b" ", b"\t", b"\r", b"\n", b"\r\n"]
LINE_PIECES += [b"X-A", b"Subject: hi", b"\xc3\xa9", b"Content-Type: multipart/mixed; boundary=x"]
LINE_PIECES += [b"a", b"\x0b", b"\x0c", b"\x85", b"\x00"]
LINE_PIECES += [b"X: ", b": ", b" \r\n", b"\tfold", b"\r\n\r\n", b"Y:"]
LINE_PIECES += [b"From x\r\n", b"From :y", b"\r\nFrom z"]  # mbox envelope lines


@settings(max_examples=1000)
@given(st.lists(st.sampled_from(LINE_PIECES), max_size=40).map(b"".join))
@example(b"")
@example(b"From me Mon Jan 1\r\n \tfolded first\r\n: no name\r\nFrom here\r\nA: b\r\nFrom x")
@example(b"A: 1\r\nno colon here\r\nB: 2\r\n")
def test_header_sections_read_as_compat32_reads_them(header: bytes) -> None:
    assert fields_of(header_section(header)) == stdlib_header_section(header)


def test_corpus_header_sections_read_as_compat32_reads_them() -> None:
    if not CORPORA.is_dir():
        pytest.skip("../shared/corpora is absent (a fresh clone); CI always has it")
    paths = [*CORPORA.glob("*/messages/**/*.eml"), *CORPORA.glob("*/messages/**/*.txt")]
    for path in sorted(paths):
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        end = raw.find(b"\r\n\r\n")
        for header in (raw[: end + 4], raw[: end + 2], raw) if end >= 0 else (raw,):
            assert fields_of(header_section(header)) == stdlib_header_section(header), path.name
    assert len(paths) > 1000


def stdlib_message(raw: bytes) -> tuple[object, ...]:
    message = BytesParser(policy=_POLICY).parsebytes(raw)
    return (*fields_of(message), message.is_multipart(), stored_payload(message))


def single_part(raw: bytes) -> tuple[object, ...] | None:
    message = _single_part(raw)
    if message is None:
        return None
    return (*fields_of(message), message.is_multipart(), stored_payload(message))


def stored_payload(message: Message) -> object:
    """The payload as the parser stored it: get_payload() decodes it with the charset
    parameter, and raises for a charset name holding a NUL (both ways alike)."""
    return vars(message)["_payload"]


BODY_PIECES = [b"Hello", b"\r\n", b"\n", b"\r", b"From me", b"--x", b"\xc3\xa9", b" ", b"\r\n\r\n"]
TYPES = [b"", b"Content-Type: text/plain\r\n", b"Content-Type: multipart/mixed; boundary=x\r\n"]
TYPES += [b"Content-Type: message/rfc822\r\n", b"Content-Type: TEXT/html; charset=x\r\n"]
TYPES += [b"Content-Type: message/delivery-status\r\n", b"Content-Type: bogus\r\n"]


@settings(max_examples=1000)
@given(
    st.lists(st.sampled_from(LINE_PIECES), max_size=20).map(b"".join),
    st.sampled_from(TYPES),
    st.lists(st.sampled_from(BODY_PIECES), max_size=20).map(b"".join),
)
@example(b"Subject: a\n", b"", b"\nbody\r\n\r\nmore")
@example(b"From x\r\nA: b\r\nFrom y\r\n", b"", b"\r\nbody")
@example(b"\t\x00\r\n", b"Content-Type: TEXT/html; charset=x\r\n", b"\r\n\xc3\xa9")
def test_single_part_messages_read_as_compat32_reads_them(
    header: bytes, kind: bytes, body: bytes
) -> None:
    raw = kind + header + body
    quick = single_part(raw)
    assert quick is None or quick == stdlib_message(raw)


def test_corpus_messages_read_as_compat32_reads_them() -> None:
    if not CORPORA.is_dir():
        pytest.skip("../shared/corpora is absent (a fresh clone); CI always has it")
    paths = [*CORPORA.glob("*/messages/**/*.eml"), *CORPORA.glob("*/messages/**/*.txt")]
    read = 0
    for path in sorted(paths):
        raw = path.read_bytes()
        for form in (raw, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")):
            quick = single_part(form)
            if quick is not None:
                assert quick == stdlib_message(form), path.name
                read += 1
    assert read > 1000, "most corpus messages are one part with well-formed headers"


@given(st.text(alphabet="aZ09-._", max_size=80))
@example("a" * 64 + ".example")
@example("example.com.")
@example("a..example")
def test_ascii_domains_skip_the_idna_codec_and_normalize_as_it_would(domain: str) -> None:
    try:
        encoded: str | None = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        encoded = None
    expected = f"x@{encoded}" if encoded is not None and _DOMAIN.match(encoded) else None
    assert normalize_address(f"x@{domain}") == expected


@pytest.mark.parametrize(
    ("domain", "stored", "earlier"),
    [
        ("bücher.example", "xn--bcher-kva.example", None),
        ("BÜCHER.Example", "xn--bcher-kva.example", None),
        ("例え.jp", "xn--r8jz45g.jp", None),
        # IDNA 2003 mapped these to other domains, each registered by someone else
        ("straße.de", "xn--strae-oqa.de", "strasse.de"),
        ("ς.gr", "xn--3xa.gr", "xn--4xa.gr"),
        ("☃.net", None, None),  # a symbol: no domain under IDNA 2008
    ],
)
def test_a_unicode_domain_is_stored_as_mail_servers_and_filing_spell_it(
    domain: str, stored: str | None, earlier: str | None
) -> None:
    """IDNA 2008, as email-validator (which files contacts) and mail servers have it: one
    spelling for the participant, the contact, and the digests that erasure leaves."""
    address = f"hans@{domain}"

    normalized = normalize_address(address)

    assert normalized == (f"hans@{stored}" if stored else None)
    assert normalized == _valid(address)
    if normalized is not None:
        assert earlier_spelling(normalized) == (f"hans@{earlier}" if earlier else None)
