"""find_forwarded: the original sender of inline-forwarded mail, never the forwarder or a quote."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.forwards import CORPORA, forward_cases, matches, reply_cases, run
from capture.forwards import ForwardedAddress, find_forwarded
from capture.parse import parse_message
from capture.pipeline import Envelope, as_submitted
from policies.model import Channel
from tests.mail import CAPTURE, compose

CUSTOMER = ForwardedAddress("ines.moreau@example.com", "Ines Moreau")


def test_gmail_forward_gives_original_sender_recipients_subject_and_date() -> None:
    body = (
        "Can you add her to the CRM?\n\n"
        "---------- Forwarded message ---------\n"
        "From: Ines Moreau <ines.moreau@Example.COM>\n"
        "Date: Tue, Mar 5, 2024 at 10:02 AM\n"
        "Subject: Quote for 40 pallets\n"
        "To: <sales@example.org>\n"
        "Cc: Paul Chen <paul@example.net>, lea@example.net\n\n"
        "Hello, could you send a quote?\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER
    assert found.to == (ForwardedAddress("sales@example.org", None),)
    assert found.cc == (
        ForwardedAddress("paul@example.net", "Paul Chen"),
        ForwardedAddress("lea@example.net", None),
    )
    assert (found.subject, found.date) == ("Quote for 40 pallets", "Tue, Mar 5, 2024 at 10:02 AM")
    assert found.body == "Hello, could you send a quote?"


def test_an_inline_forward_stands_for_the_original_with_its_date_when_that_reads() -> None:
    def forwarding(date: str) -> bytes:
        block = f"From: Jane Doe <jane@acme.example>\nDate: {date}\nSubject: Order 1234\n"
        body = f"Please file.\n\n---------- Forwarded message ---------\n{block}\nShip it.\n"
        return compose(to=CAPTURE, subject="Fwd: Order 1234", body=body).as_bytes()

    envelope = Envelope(mail_from="alice@example.com", rcpt_tos=(CAPTURE,))
    rfc, gmail = (
        as_submitted(parse_message(forwarding(date)), envelope, Channel.BCC)[0]
        for date in ("Mon, 5 Jan 2026 09:00:00 +0000", "Mon, Jan 5, 2026 at 9:00 AM")
    )

    assert rfc.date == datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert gmail.date == datetime(2026, 11, 23, 9, tzinfo=UTC)  # unread: the forward's, no later
    assert rfc.message_id == "<quote-1@example.com>"  # the original's is not written inline


@pytest.mark.parametrize(
    "sent",
    [
        "Monday, March 4, 2024 4:12 PM",  # Outlook, US: it said 04:12 UTC, 12 hours early
        "Monday, 4 March 2024 16:12",  # Outlook, UK: local time, read as UTC
        "Mon, 4 Mar 2024 4:12 PM",
    ],
)
def test_an_outlook_sent_line_leaves_the_forwards_own_date(sent: str) -> None:
    """Outlook writes the sender's local time with no zone, and often with AM/PM: no instant
    can be read from it, so the forward's own date stands, as for Gmail's form."""
    block = f"From: Jane Doe <jane@acme.example>\nSent: {sent}\nTo: Alice\nSubject: Order\n"
    body = f"Please file.\n\n-----Original Message-----\n{block}\nShip it.\n"
    forward = compose(to=CAPTURE, subject="FW: Order", body=body).as_bytes()
    envelope = Envelope(mail_from="alice@example.com", rcpt_tos=(CAPTURE,))

    original, channel = as_submitted(parse_message(forward), envelope, Channel.BCC)

    assert channel is Channel.FORWARD
    assert original.sender is not None and original.sender.address == "jane@acme.example"
    assert original.date == datetime(2026, 11, 23, 9, tzinfo=UTC)


def test_a_thunderbird_html_forward_gives_the_original_sender() -> None:
    """Thunderbird writes its separator as text right before the table of headers: the
    table started no line, so the separator and the first header were read as one line,
    and the forward was filed with nobody in it."""
    html = (
        '<html><body><p>FYI</p><div class="moz-forward-container"><br><br>\n'
        "-------- Forwarded Message --------\n"
        '<table class="moz-email-headers-table" cellspacing="0" cellpadding="0" border="0">'
        '<tbody><tr><th valign="BASELINE" nowrap="nowrap" align="RIGHT">Subject: </th>'
        "<td>Order 1234</td></tr><tr><th>Date: </th><td>Mon, 5 Jan 2026 09:00:00 +0100</td>"
        "</tr><tr><th>From: </th><td>Jane Doe "
        '<a class="moz-txt-link-rfc2396E" href="mailto:jane@acme.example">'
        "&lt;jane@acme.example&gt;</a></td></tr></tbody></table><br>Ship it.</div></body></html>"
    )
    forward = compose(to=CAPTURE, subject="Fwd: Order 1234")
    forward.set_content(html, subtype="html")
    envelope = Envelope(mail_from="alice@example.com", rcpt_tos=(CAPTURE,))

    original, channel = as_submitted(parse_message(forward.as_bytes()), envelope, Channel.BCC)

    assert channel is Channel.FORWARD
    assert original.sender is not None and original.sender.address == "jane@acme.example"
    assert original.date == datetime(2026, 1, 5, 8, tzinfo=UTC)


def test_mail_to_someone_outside_with_the_capture_address_copied_is_the_employees_own() -> None:
    """Alice forwards Jane's order to Dan at another customer and copies the capture
    address: that is her message to Dan (a BCC), not Jane's order filed again without Dan."""
    block = "From: Jane Doe <jane@acme.example>\nDate: Mon, 5 Jan 2026 09:00:00 +0000\n"
    body = f"Dan, see below.\n\n---------- Forwarded message ---------\n{block}\nShip it.\n"
    to_dan = compose(to="Dan <dan@other.example>", subject="Fwd: Order", body=body)
    to_dan["Cc"] = CAPTURE
    to_colleague = compose(to="Bob <bob@example.com>", subject="Fwd: Order", body=body)
    to_colleague["Cc"] = CAPTURE
    envelope = Envelope(mail_from="alice@example.com", rcpt_tos=(CAPTURE,))
    org = frozenset({"example.com"})

    own, channel = as_submitted(parse_message(to_dan.as_bytes()), envelope, Channel.BCC, org)
    filed, as_forward = as_submitted(
        parse_message(to_colleague.as_bytes()), envelope, Channel.BCC, org
    )

    assert channel is Channel.BCC
    assert [a.address for a in own.participants] == ["alice@example.com", "dan@other.example"]
    assert as_forward is Channel.FORWARD  # to a colleague: still a forward to be filed
    assert filed.sender is not None and filed.sender.address == "jane@acme.example"


def test_a_forward_as_attachment_stands_for_the_attached_message_with_its_date_and_ids() -> None:
    reply = compose(
        sender="Jane Doe <jane@acme.example>",
        to="Alice <alice@example.com>",
        subject="Re: Quote",
        message_id="<reply-1@acme.example>",
        headers={"In-Reply-To": "<quote-1@example.com>", "References": "<quote-1@example.com>"},
    )
    reply.replace_header("Date", "Mon, 05 Jan 2026 09:00:00 +0000")
    forward = compose(to=CAPTURE, subject="Fwd: Re: Quote", body="FYI\n", message_id="<f@x>")
    forward.add_attachment(reply)
    envelope = Envelope(mail_from="alice@example.com", rcpt_tos=(CAPTURE,))

    original, channel = as_submitted(parse_message(forward.as_bytes()), envelope, Channel.BCC)

    assert channel is Channel.FORWARD
    assert original.date == datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert (original.message_id, original.in_reply_to, original.references) == (
        "<reply-1@acme.example>",
        "<quote-1@example.com>",
        ("<quote-1@example.com>",),
    )


def test_outlook_original_message_block_gives_original_sender() -> None:
    body = (
        "FYI\r\n\r\n-----Original Message-----\r\n"
        "From: Ines Moreau [mailto:ines.moreau@example.com]\r\n"
        "Sent: Monday, March 4, 2024 4:12 PM\r\n"
        "To: Sales Team; Paul Chen\r\n"
        "Subject: Pallets\r\n\r\nHi all\r\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER
    assert found.to == (ForwardedAddress(None, "Sales Team"), ForwardedAddress(None, "Paul Chen"))
    assert found.date == "Monday, March 4, 2024 4:12 PM"


def test_apple_mail_quoted_block_gives_original_sender_and_unquoted_body() -> None:
    body = (
        "See below.\n\n"
        "> Begin forwarded message:\n>\n"
        '> From: "Moreau, Ines" <ines.moreau@example.com>\n'
        "> Subject: Pallets\n"
        "> Date: 4 March 2024 at 16:12:09 CET\n"
        "> To: sales@example.org\n>\n"
        "> Hi all,\n> thanks\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == ForwardedAddress("ines.moreau@example.com", "Moreau, Ines")
    assert found.body == "Hi all,\nthanks"


def test_german_outlook_block_gives_original_sender() -> None:
    body = (
        "-----Ursprüngliche Nachricht-----\n"
        "Von: Ines Moreau <ines.moreau@example.com>\n"
        "Gesendet: Montag, 4. März 2024 16:12\n"
        "An: Vertrieb <vertrieb@example.de>\n"
        "Betreff: Angebot\n\nGuten Tag,\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER
    assert found.to == (ForwardedAddress("vertrieb@example.de", "Vertrieb"),)
    assert found.subject == "Angebot"


def test_japanese_outlook_block_gives_original_sender() -> None:
    body = (
        "ご確認ください。\n\n"
        "差出人: Ines Moreau <ines.moreau@example.com>\n"
        "送信日時: 2024年3月4日 16:12\n"
        "宛先\uff1a 営業部 <eigyo@example.jp>\n"  # a fullwidth colon, as some clients write
        "件名: お見積り\n\nお世話になっております。\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER
    assert (found.subject, found.date) == ("お見積り", "2024年3月4日 16:12")


def test_lotus_notes_forwarded_by_gives_original_sender_not_forwarder() -> None:
    body = (
        "----- Forwarded by Sam Employee/Sales/Acme on 03/05/2001 09:12 AM -----\n\n\n"
        '"Ines Moreau" <ines.moreau@example.com> on 03/04/2001 04:33:12 PM\n'
        "To: Sam Employee/Sales/Acme@Acme\n"
        "cc:\n"
        "Subject: Pallets\n\nHello\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER
    assert found.to == (ForwardedAddress(None, "Sam Employee"),)


def test_lotus_notes_name_above_the_block_gives_a_name_without_address() -> None:
    body = (
        "---------------------- Forwarded by Sam Employee/Sales/Acme on 03/05/2001\n"
        "09:12 AM ---------------------------\n\n"
        "Ines Moreau\n03/04/2001 04:33 PM\n"
        "To: Sam Employee/Sales/Acme@Acme\ncc:\nSubject: Pallets\n\nHello\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == ForwardedAddress(None, "Ines Moreau")


def test_nested_forward_gives_the_outermost_forwarded_message() -> None:
    body = (
        "---------- Forwarded message ---------\n"
        "From: Ines Moreau <ines.moreau@example.com>\n"
        "Date: Tue, Mar 5, 2024 at 10:02 AM\n"
        "Subject: Fwd: Pallets\n"
        "To: <sales@example.org>\n\n"
        "Forwarding what my supplier sent.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Supplier <orders@supplier.example>\n"
        "Date: Mon, Mar 4, 2024 at 9:00 AM\n"
        "Subject: Pallets\n"
        "To: <ines.moreau@example.com>\n\nStock is low.\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER
    assert "Stock is low." in found.body


def test_reply_attribution_line_is_not_a_forward() -> None:
    body = (
        "Thanks, booked.\n\n"
        "On Tue, Mar 5, 2024 at 10:02 AM Ines Moreau <ines.moreau@example.com> wrote:\n"
        "> Can we meet on Friday?\n"
    )
    assert find_forwarded(body) is None
    assert find_forwarded(body, subject="Re: Friday") is None


def test_localized_reply_attribution_is_not_a_forward() -> None:
    body = (
        "Danke!\n\nAm 05.03.2024 um 10:02 schrieb Ines Moreau <ines.moreau@example.com>:\n> Hallo\n"
    )
    assert find_forwarded(body) is None


def test_outlook_for_mac_attribution_is_a_forward_only_under_a_forward_subject() -> None:
    body = (
        'On 05/03/2024 10:02, "Ines Moreau" <ines.moreau@example.com> wrote:\n\n'
        "    Can we meet on Friday?\n"
    )
    assert find_forwarded(body) is None
    assert find_forwarded(body, subject="Re: Friday") is None
    found = find_forwarded(body, subject="FW: Friday")
    assert found is not None
    assert found.sender == CUSTOMER
    assert found.subject == "Friday"


def test_reply_subject_keeps_an_outlook_quote_block_from_counting_as_forward() -> None:
    body = (
        "Sounds good.\n\n________________________________\n"
        "From: Ines Moreau <ines.moreau@example.com>\n"
        "Sent: Tuesday, March 5, 2024 10:02\n"
        "To: Sam <sam@example.org>\n"
        "Subject: Friday\n\nCan we meet?\n"
    )
    assert find_forwarded(body, subject="RE: Friday") is None
    found = find_forwarded(body, subject="WG: Friday")
    assert found is not None
    assert found.sender == CUSTOMER


def test_body_without_forward_gives_none() -> None:
    body = "Hi team,\n\nNote: the meeting moved to 10:30.\nSee https://example.com/agenda\n"
    assert find_forwarded(body) is None
    assert find_forwarded("") is None


def test_sentence_ending_in_wrote_does_not_hide_the_forward_below() -> None:
    body = (
        "Here is what the customer wrote:\n\n"
        "---------- Forwarded message ---------\n"
        "From: Ines Moreau <ines.moreau@example.com>\n"
        "Subject: Pallets\n\nHello\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER


def test_unquoted_comma_in_display_name_stays_in_the_name() -> None:
    body = (
        "________________________________\n"
        "From: Moreau, Ines <ines.moreau@example.com>\n"
        "Sent: Tuesday, March 5, 2024 10:02\n"
        "To: Chen, Paul <paul@example.net>, lea@example.net\n"
        "Subject: Pallets\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == ForwardedAddress("ines.moreau@example.com", "Moreau, Ines")
    assert [a.address for a in found.to] == ["paul@example.net", "lea@example.net"]


def test_yahoo_one_line_block_gives_original_sender() -> None:
    body = (
        "   ----- Forwarded Message ----- From: Ines Moreau <ines.moreau@example.com>To: "
        '"sales@example.org" <sales@example.org>Sent: Tuesday, March 5, 2024, 10:02:50 AM GMT+1'
        "Subject: Pallets\n Hello\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER
    assert found.subject == "Pallets"


def test_html_converted_block_with_bold_and_lone_labels_gives_original_sender() -> None:
    body = (
        "Please log this.\n\n"
        "*From:* Ines Moreau<mailto:ines.moreau@example.com> "
        "<ines.moreau@example.com<mailto:ines.moreau@example.com>>\n"
        "*Sent:*\nTuesday, March 5, 2024 10:02\n"
        "*To:*\nsales@example.org\n"
        "*Subject:* Pallets\n\nHello\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == CUSTOMER
    assert found.date == "Tuesday, March 5, 2024 10:02"


def test_sender_without_a_valid_address_gives_no_address() -> None:
    body = (
        "-----Original Message-----\n"
        "From: Ines Moreau <ines.moreau@localhost>\n"
        "Sent: Tuesday, March 5, 2024 10:02\n"
        "Subject: Pallets\n"
    )
    found = find_forwarded(body)
    assert found is not None
    assert found.sender == ForwardedAddress(None, "Ines Moreau")


def test_forward_separator_without_a_readable_block_gives_no_sender() -> None:
    found = find_forwarded("---------- Forwarded message ---------\n\nHello there\n")
    assert found is not None
    assert found.sender == ForwardedAddress(None, None)
    assert found.body == "Hello there"


@pytest.mark.parametrize(
    "body",
    [
        "From: " * 200_000,
        "-" * 1_000_000,
        ">" * 1_000_000,
        "a@" * 500_000,
        "From: x\n" * 125_000,
        "-----Original Message-----\nFrom: a@b.example\nTo: " + "a@b.example, " * 80_000,
        ("x" * 5_000 + ":\n") * 200,
    ],
    ids=["from-run", "dashes", "quotes", "at-signs", "from-lines", "long-to", "long-lines"],
)
def test_adversarial_megabyte_input_returns(body: str) -> None:
    find_forwarded(body)  # returns at all: bench/forwards.py measures how fast
    find_forwarded(body, subject="Fwd: x")


def test_corpus_original_senders_are_found_and_replies_are_not_forwards() -> None:
    if not (CORPORA / "forwards" / "expected.csv").is_file():
        pytest.skip(f"../shared/corpora absent: {CORPORA} holds no forwards/expected.csv")
    forwards = list(forward_cases())
    wrong = [case.name for case in forwards if not matches(case, run(case))]
    assert (len(forwards) - len(wrong)) / len(forwards) >= 0.99, wrong
    assert [case.name for case in reply_cases() if run(case) is not None] == []
