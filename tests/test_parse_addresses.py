"""Parse: the quick path for plain address headers reads them exactly as the header registry."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capture.parse import _mailboxes
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
    ],
)
def test_quick_and_registry_parsers_agree(value: str) -> None:
    assert _mailboxes(value, "to", []) == registry("to", value)


@given(st.text(alphabet=[chr(c) for c in range(32, 127)], max_size=110))
def test_quick_and_registry_parsers_agree_on_quoted_names(name: str) -> None:
    value = '"' + name.replace("\\", "").replace('"', "") + '" <someone@example.com>'
    assert _mailboxes(value, "to", []) == registry("to", value)


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
