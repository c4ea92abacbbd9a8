"""Thread keys from Message-ID, In-Reply-To and References, and the subject fallback."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage

import pytest
import sqlalchemy as sa

from app.filing import dedupe_key
from app.models import Message, Receipt
from capture.parse import parse_message
from capture.threads import ThreadBasis, normalize_subject, thread_key
from tests.conftest import FIXTURES, Running, add_employee
from tests.mail import compose, send


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


def with_ids(msg: EmailMessage, message_id: bytes, in_reply_to: bytes) -> bytes:
    """The message as sent, with this Message-ID and In-Reply-To written as they are."""
    written = b"Message-ID: " + message_id + b"\r\nIn-Reply-To: " + in_reply_to + b"\r\n"
    raw = msg.as_bytes(policy=policy.SMTP)
    return raw.replace(b"Message-ID: <quote-1@example.com>\r\n", written, 1)


@pytest.mark.parametrize("empty", [b"<>", b"< >", b" (none)", b"<> (no id)", b"(<>)"])
def test_an_empty_message_id_is_no_id(empty: bytes) -> None:
    """Unrelated messages would share a thread and a dedupe-key basis by an id naming nothing."""
    quote = parse_message(with_ids(compose(), empty, empty))
    invoice = parse_message(with_ids(compose(subject="Invoice 4711"), empty, empty))

    assert (quote.message_id, quote.in_reply_to) == (None, None)
    assert thread_key(quote).basis is ThreadBasis.SUBJECT
    assert thread_key(quote).key != thread_key(invoice).key
    assert dedupe_key(quote, b"k") == dedupe_key(parse_message(quote.raw), b"k")
    assert dedupe_key(quote, b"k") != dedupe_key(parse_message(quote.raw + b"\r\n"), b"k")


def test_a_message_id_without_brackets_is_still_an_id() -> None:
    raw = with_ids(compose(), b"quote-1@example.com (Outlook)", b"<parent@example.com>")
    message = parse_message(raw)
    assert (message.message_id, message.in_reply_to) == (
        "quote-1@example.com (Outlook)",
        "<parent@example.com>",
    )


def test_unrelated_messages_with_an_empty_message_id_are_threads_of_their_own(
    running: Running,
) -> None:
    """And a retry of one is still recognised (by its receipt), not filed twice."""
    add_employee(running.runtime.sessions, "alice@example.com")
    quote = with_ids(compose(), b"<>", b"<>")
    invoice = with_ids(
        compose(subject="Invoice 4711", to="Carol <carol@other.example>"), b"<>", b"<>"
    )

    for raw in (quote, invoice, quote):
        assert send(running.smtp_port, raw)[0] == 250

    with running.runtime.sessions() as session:
        filed = session.execute(sa.select(Message.message_id, Message.thread_id)).all()
        receipts = session.scalar(sa.select(sa.func.count()).select_from(Receipt))
    assert filed[0].thread_id != filed[1].thread_id
    assert [message_id for message_id, _ in filed] == [None, None]
    assert receipts == 2


def test_a_long_threads_references_keep_its_root_and_its_newest_ids() -> None:
    """Ids as long as mail clients write them: 120 of them fill far more than the 4,000
    characters a header value is otherwise kept to."""
    ids = [f"<CAH{n:04d}x7QmZ1fVbq9kKcNn2Wp0gTt8sLrYd@mail.gmail.com>" for n in range(120)]
    raw = parsed(
        headers={"In-Reply-To": ids[-1], "References": " ".join(ids)},
        message_id="<reply@example.com>",
    )
    message = parse_message(raw)

    assert len(message.references) == 100
    assert message.references == (ids[0], *ids[-99:])
    key = thread_key(message)
    assert (key.basis, key.key) == (ThreadBasis.REFERENCES, ids[0])
    assert key.ids[:3] == ("<reply@example.com>", ids[-1], ids[0])


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
