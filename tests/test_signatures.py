"""The newest signature block: name, title, company and phones, with the lines they came from."""

from __future__ import annotations

import pytest

from capture.content import message_content
from capture.parse import parse_message, parse_mime
from capture.people import person
from capture.signatures import Found, Phone, PhoneKind, extract_signature, region_for_domain
from tests.conftest import CORPORA, FIXTURES


def text_of(name: str) -> str:
    raw = (FIXTURES / name).read_bytes().replace(b"\n", b"\r\n")
    return parse_message(raw).text


def test_business_mail_signature_after_a_closing() -> None:
    signature = extract_signature(text_of("business.eml"), sender_name="Alice Example")
    assert signature is not None
    assert signature.name == Found("Alice Example", 8)
    assert signature.title == Found("Account Manager", 9)
    assert signature.company == Found("Example Corp", 9)
    assert signature.phones == (Phone("+442079460000", PhoneKind.PHONE, 10),)
    assert signature.matches_sender


def test_the_newest_signature_is_read_not_the_quoted_one() -> None:
    raw = (FIXTURES / "signature_reply_de.eml").read_bytes().replace(b"\n", b"\r\n")
    message = parse_message(raw)
    assert message.sender is not None
    sender = person(message.sender)
    assert sender is not None and sender.company is not None
    signature = extract_signature(
        message.text,
        sender_name=message.sender.name,
        company_hint=sender.company.name,
        region=region_for_domain(sender.domain),
    )
    assert signature is not None
    assert signature.name is not None and signature.name.value == "Dr. Hans Müller"
    assert signature.title is not None and signature.title.value == "Leiter Einkauf"
    assert signature.company is not None and signature.company.value == "Muster Maschinen GmbH"
    assert [(p.number, p.kind) for p in signature.phones] == [
        ("+49891234567", "phone"),
        ("+491712345678", "mobile"),
    ]
    lines = message.text.split("\n")
    assert lines[signature.company.line] == "Muster Maschinen GmbH"
    assert all(
        "Example" not in lines[n] for n in range(signature.first_line, signature.last_line + 1)
    )


def test_an_html_only_signature_is_read_from_the_converted_text() -> None:
    raw = (FIXTURES / "html_only.eml").read_bytes().replace(b"\n", b"\r\n")
    signature = extract_signature(message_content(parse_mime(raw)).text)
    assert signature is not None
    assert signature.name is not None and signature.name.value == "Grace Hopper"
    assert signature.title is not None and signature.title.value == "Director of Engineering"
    assert signature.company is not None and signature.company.value == "Navy Systems Inc."


def test_the_block_after_a_dash_dash_line() -> None:
    text = "See you then.\n\n-- \nJane Roe | VP Marketing | Acme Widgets\n+1 (415) 555-0100\n"
    signature = extract_signature(text)
    assert signature is not None
    assert (signature.first_line, signature.last_line) == (3, 4)
    assert signature.name == Found("Jane Roe", 3)
    assert signature.title == Found("VP Marketing", 3)
    assert signature.company == Found("Acme Widgets", 3)
    assert signature.phones == (Phone("+14155550100", PhoneKind.PHONE, 4),)
    assert not signature.matches_sender  # no sender name given


def test_a_first_name_under_the_closing_then_the_full_card_gives_no_name_for_a_company() -> None:
    """After "Thanks,\nJane", the card: the card's name is the fuller one, never the
    company (which was filed as the organization "Jane Doe")."""
    text = (
        "The order is confirmed.\n\nThanks,\nJane\n\n"
        "Jane Doe | Head of Procurement | Acme Widgets Ltd\nM: +44 7911 123456\n"
    )
    signature = extract_signature(text, sender_name="Jane Doe")
    assert signature is not None
    assert signature.name == Found("Jane Doe", 5)
    assert signature.title == Found("Head of Procurement", 5)
    assert signature.company == Found("Acme Widgets Ltd", 5)


def test_a_disclaimer_under_the_signature_is_no_company() -> None:
    """A sentence of the disclaimer naming "Acme Group" (or "the company") was filed as the
    sender's organization."""
    text = (
        "The order is confirmed.\n\nBest regards,\nJane Doe\nHead of Procurement\n"
        "Tel: +44 20 7946 0958\n\n"
        "This e-mail and any attachments are confidential and intended solely for\n"
        "the addressee. If you are not the intended recipient, please notify the\n"
        "sender and delete it. Acme Group accepts no liability for its content.\n"
    )
    signature = extract_signature(text, sender_name="Jane Doe")
    assert signature is not None
    assert signature.title == Found("Head of Procurement", 4)
    assert signature.company is None


def test_a_name_on_the_closing_line() -> None:
    signature = extract_signature("Works for me.\n\nThanks, Vince\n", sender_name="Vince Kaminski")
    assert signature is not None and signature.name == Found("Vince", 2)
    assert signature.matches_sender


@pytest.mark.parametrize(
    "text",
    [
        "Thanks for the note. I will call you tomorrow.\n",  # a closing word opening a sentence
        "Please call 713-853-5854 about the contract.\n",  # a number in prose
        "Hi,\n\nsee below.\n\nOn Mon, 23 Nov 2026, Jane Roe wrote:\n> Regards,\n> Jane Roe\n",
        "",
    ],
)
def test_no_signature(text: str) -> None:
    assert extract_signature(text, region="US") is None


def test_a_business_card_without_a_closing_needs_a_name_and_a_phone() -> None:
    card = "Let me know.\n\nRita Hartfield\nPhone:  713-853-5854\nFax:  713-646-8861\n"
    signature = extract_signature(card, region="US")
    assert signature is not None and signature.name == Found("Rita Hartfield", 2)
    assert [p.kind for p in signature.phones] == ["phone", "fax"]


def test_phone_numbers_without_a_country_code_need_a_region() -> None:
    text = "Regards,\nJohn Doe\nTel: (713) 853-5854\n"
    without = extract_signature(text)
    with_region = extract_signature(text, region="US")
    assert without is not None and without.phones == ()
    assert with_region is not None and with_region.phones == (
        Phone("+17138535854", PhoneKind.PHONE, 2),
    )
    assert region_for_domain("acme.de") == "DE" and region_for_domain("acme.co.uk") == "GB"
    assert region_for_domain("acme.com") is None


@pytest.mark.parametrize(
    "hostile",
    [
        "x" * 5_000_000,
        "Regards,\n" + "\n".join(["John Doe"] * 200_000),
        "Regards,\n" + "9" * 1_000_000,
        ">" * 1_000_000,
        "From: a\nTo: b\n" * 100_000,
        "\n".join(["-" * 200] * 1_500),  # long rules once cost 0.3 ms each to match
        "Regards,\n" + "\n".join(" ".join(["12 34 56"] * 40) for _ in range(40)),
    ],
)
def test_hostile_text_is_read_within_bounds(hostile: str) -> None:
    signature = extract_signature(hostile, region="US")
    assert signature is None or len(signature.phones) <= 4


@pytest.mark.skipif(
    not (CORPORA / "enron-categories").is_dir(),
    reason="../shared/corpora/enron-categories is absent",
)
def test_enron_signature_with_title_company_and_phone() -> None:
    (path,) = (CORPORA / "enron-categories" / "messages").glob("*/12030.txt")
    message = parse_message(path.read_bytes())
    signature = extract_signature(
        message.text, sender_name=message.header("x-from") or "", region="US"
    )
    assert signature is not None and signature.matches_sender
    assert signature.name is not None and signature.name.value == "Teri Connor-Smith"
    assert signature.title is not None and signature.title.value == "Admin Coordinator"
    assert signature.company is not None
    assert signature.company.value == "Enron Metals & Commodities Corp"
    assert signature.phones == (Phone("+12127155601", PhoneKind.PHONE, signature.phones[0].line),)
