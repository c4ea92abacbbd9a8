"""Thread keys from Message-ID, In-Reply-To and References, and the subject fallback."""

from __future__ import annotations

import pytest

from capture.parse import parse_message
from capture.threads import ThreadBasis, normalize_subject, thread_key
from tests.conftest import FIXTURES
from tests.mail import compose


def parsed(**kwargs: object) -> bytes:
    return compose(**kwargs).as_bytes()  # type: ignore[arg-type]


def test_a_reply_joins_the_thread_of_its_references_root() -> None:
    raw = (FIXTURES / "signature_reply_de.eml").read_bytes().replace(b"\n", b"\r\n")
    key = thread_key(parse_message(raw))
    assert key.basis is ThreadBasis.REFERENCES
    assert key.key == "<offer-1@example.com>"
    assert key.ids == (
        "<aw-1@muster-maschinen.de>",
        "<offer-7@example.com>",
        "<offer-1@example.com>",
    )


def test_without_references_the_parent_is_the_key() -> None:
    raw = parsed(headers={"In-Reply-To": "<parent@example.com>"})
    key = thread_key(parse_message(raw))
    assert (key.basis, key.key) == (ThreadBasis.IN_REPLY_TO, "<parent@example.com>")


def test_a_first_message_starts_its_own_thread() -> None:
    key = thread_key(parse_message(parsed(message_id="<first@example.com>")))
    assert (key.basis, key.key, key.ids) == (
        ThreadBasis.MESSAGE_ID,
        "<first@example.com>",
        ("<first@example.com>",),
    )


def test_without_message_ids_a_reply_from_the_other_side_gets_the_same_fallback_key() -> None:
    first = parse_message(parsed(message_id=None, subject="Quote for 20 licences"))
    reply = parse_message(
        parsed(
            message_id=None,
            sender="Bob Builder <Bob@Customer.example>",
            to="Alice Example <alice@example.com>",
            subject="AW: RE: [ext] Quote for 20 licences",
        )
    )
    other = parse_message(parsed(message_id=None, subject="Invoice 4711"))
    assert thread_key(first).is_fallback
    assert thread_key(first).key == thread_key(reply).key
    assert thread_key(first).key != thread_key(other).key
    assert "licences" not in thread_key(first).key  # a digest, not the subject


@pytest.mark.parametrize(
    ("subject", "normalized"),
    [
        ("Re: AW: [acme-list] Fwd: Quote (fwd)", "quote"),
        ("RE[2]: Quote", "quote"),
        ("Re^3: Quote", "quote"),
        ("Re : Bonjour", "bonjour"),
        ("TR: Réunion", "réunion"),
        ("SV: VS: Tilbud", "tilbud"),
        ("Odp: Oferta", "oferta"),
        ("Ответ: привет", "привет"),
        ("回复\uff1a报价", "报价"),  # a fullwidth colon
        ("RV: Rif: Offerta", "offerta"),
        ("Antw: WG: Angebot", "angebot"),
        ("Info: the meeting", "info: the meeting"),  # not a prefix: kept
        ("Re:", ""),
    ],
)
def test_normalized_subjects(subject: str, normalized: str) -> None:
    assert normalize_subject(subject) == normalized


def test_a_hostile_subject_is_normalized_in_bounded_time() -> None:
    assert normalize_subject("Re: " * 100_000 + "x") == ""  # beyond the length looked at
    assert normalize_subject("[" * 100_000) == "[" * 300
