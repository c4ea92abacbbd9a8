"""Message text for extraction: plain preferred, HTML converted, bad charsets survive, and
attachments listed without their content."""

from __future__ import annotations

import base64
import csv
from email.message import EmailMessage

import pytest

from capture.content import TextSource, html_to_text, message_content
from capture.parse import Address, Attachment, parse_message, parse_mime
from tests.conftest import CORPORA, FIXTURES


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().replace(b"\n", b"\r\n")


def test_plain_text_is_read_as_it_is() -> None:
    content = message_content(parse_mime(fixture("business.eml")))
    assert content.source is TextSource.PLAIN
    assert content.text.startswith("Hi Bob,\n\nattached is the revised quote")
    assert (content.charset, content.charset_guessed, content.attachments) == ("utf-8", False, ())


def test_plain_is_preferred_over_html_in_an_alternative() -> None:
    msg = EmailMessage()
    msg.set_content("the plain version")
    msg.add_alternative("<p>the <b>HTML</b> version</p>", subtype="html")
    content = message_content(parse_mime(msg.as_bytes()))
    assert (content.source, content.text) == (TextSource.PLAIN, "the plain version\n")
    assert content.attachments == ()


def test_html_only_mail_becomes_lines_of_text_and_attachments_are_listed() -> None:
    content = message_content(parse_mime(fixture("html_only.eml")))
    assert content.source is TextSource.HTML
    assert content.charset == "cp1252"
    assert [line for line in content.text.splitlines() if line] == [
        "Hello Alice,",
        "the notes from today\u2019s meeting are attached.",
        "Kind regards,",
        "Grace Hopper",
        "Director of Engineering",
        "Navy Systems Inc.",
    ]
    assert "alert" not in content.text and "color" not in content.text
    pdf, earlier = content.attachments
    assert pdf == Attachment("notes.pdf", "application/pdf", 58)
    assert (earlier.filename, earlier.content_type) == ("earlier.eml", "message/rfc822")
    assert earlier.size > 0


def test_an_unknown_charset_is_guessed_and_never_raises() -> None:
    content = message_content(parse_mime(fixture("broken_charset.eml")))
    assert content.charset_guessed
    assert "commande révisée pour la livraison de décembre" in content.text
    assert "unknown-charset" in content.defects


def test_a_wrong_charset_falls_back_to_utf8() -> None:
    body = "Grüße aus München, die Lieferung kommt am Montag.".encode()
    raw = b"From: a@b.com\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body
    content = message_content(parse_mime(raw))
    assert content.text == body.decode()
    assert (content.charset, content.charset_guessed) == ("utf-8", True)
    assert "wrong-charset" in content.defects


def test_undecodable_bytes_become_replacement_characters() -> None:
    raw = b"From: a@b.com\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nok \xff\xfe\xfd end"
    content = message_content(parse_mime(raw))
    assert content.text.startswith("ok ") and content.text.endswith(" end")


def test_a_message_without_a_body_has_no_text() -> None:
    raw = (
        b"From: a@b.com\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\niVBORw0KGgo=\r\n"
    )
    content = message_content(parse_mime(raw))
    assert (content.source, content.text) == (TextSource.NONE, "")
    assert content.attachments == (Attachment("", "image/png", 8),)


def test_html_conversion_keeps_blocks_apart_and_inline_text_together() -> None:
    html = "<table><tr><td>Name</td><td>Jane <i>Roe</i></td></tr></table><p>a<br/>b</p>"
    assert [line for line in html_to_text(html).splitlines() if line] == [
        "Name\tJane Roe",
        "a",
        "b",
    ]


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<div>Hi Bob</div><div>Thanks</div>", "Hi Bob\nThanks"),
        ("Hi Bob,<div>here is the quote.</div>", "Hi Bob,\nhere is the quote."),  # Apple Mail
        ("Hi Bob,<div><br></div><div>here it is.</div>", "Hi Bob,\n\nhere it is."),  # Gmail
        ("<div>Best,<br></div><div>Jane</div>", "Best,\nJane"),  # a block's last <br>
        ("Agenda<ul><li>price<li>dates</ul>Jane", "Agenda\nprice\ndates\nJane"),
        ("First<p>Second<p>Third", "First\nSecond\nThird"),
        ("Re<h2>Quote</h2>see<blockquote>the offer</blockquote>", "Re\nQuote\nsee\nthe offer"),
        ("<div> <div> <p>Hi</p> </div> </div> <div>Bob</div>", "Hi\nBob"),
        ("a<br>b<br><br>c", "a\nb\n\nc"),
    ],
)
def test_html_blocks_start_and_end_a_line_once(html: str, text: str) -> None:
    """Words of two blocks are never glued together ("BobThanks"), for readers and for the
    content rules alike; nor does nesting pile up blank lines. <br> breaks as it is written."""
    assert html_to_text(html) == text


def test_an_html_body_sent_with_crlf_line_ends_is_not_broken_where_its_source_wraps() -> None:
    """As SMTP delivers it (and as Outlook wraps its HTML, mid-sentence): each CR of the
    source became a line break of the text, splitting sentences and signature lines."""
    html = (
        "<p>Hello Bob,<br>here is the quote we\r\ndiscussed.</p>\r\n"
        "<p>Jane Doe, Head\r\nof Procurement</p>"
    )
    raw = f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n".encode()
    assert message_content(parse_mime(raw)).text == (
        "Hello Bob,\nhere is the quote we discussed.\nJane Doe, Head of Procurement"
    )


def test_html_nested_as_deep_as_mail_goes_is_read_and_nested_beyond_reason_is_no_text() -> None:
    deep = "<div><span>" * 200 + "<p>Quote</p>" + "</span></div>" * 200
    beyond = "<div><span>" * 300 + "<p>Quote</p>"

    assert html_to_text(deep) == "Quote"
    assert html_to_text(beyond) == ""


@pytest.mark.skipif(
    not (CORPORA / "spamassassin").is_dir(), reason="../shared/corpora/spamassassin is absent"
)
def test_every_spamassassin_message_gives_text_without_raising() -> None:
    manifest = CORPORA / "spamassassin" / "manifest.csv"
    with manifest.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    sources = []
    for row in rows[::5]:
        raw = (CORPORA / "spamassassin" / "messages" / row["group"] / row["file"]).read_bytes()
        content = message_content(parse_mime(raw))
        assert "\r" not in content.text
        sources.append(content.source)
    assert sources.count(TextSource.HTML) > 50  # HTML-only mail is common in this corpus
    assert sources.count(TextSource.PLAIN) > 300


def test_gbk_text_labelled_gb2312_is_read_in_the_name_subject_and_body() -> None:
    """Chinese mail clients label GBK text gb2312, whose table lacks many characters of
    given names (喆, 堃, 珺): the name lost them, the subject stayed encoded words and the
    body was guessed to be Korean. Read as browsers read the label: GB 18030, its superset."""
    name = base64.b64encode("王喆".encode("gbk")).decode()
    subject = base64.b64encode("关于喆的报价".encode("gbk")).decode()
    raw = (
        f"From: =?gb2312?B?{name}?= <wz@acme.cn>\r\nTo: alice@example.com\r\n"
        f"Subject: =?GB2312?B?{subject}?=\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + "您好喆先生的报价如下。\r\n".encode("gbk")

    message = parse_message(raw)

    assert message.sender == Address("wz@acme.cn", "王喆")
    assert message.subject == "关于喆的报价"
    assert message.text == "您好喆先生的报价如下。\n"
    assert message.defects == ()


@pytest.mark.parametrize(
    ("label", "codec", "name", "subject", "body"),
    [
        ("windows-874", "cp874", "สมชาย ใจดี", "ใบเสนอราคา", "ขอใบเสนอราคาสินค้า"),  # Thai Outlook
        ("iso-8859-8-i", "iso8859-8", "דנה כהן", "הצעת מחיר", "מצורפת הצעת מחיר"),  # Hebrew
    ],
)
def test_a_charset_mail_names_as_python_does_not_is_read(
    label: str, codec: str, name: str, subject: str, body: str
) -> None:
    """Mail's names for some charsets are not Python's (windows-874 is cp874): the name
    became '?', the subject stayed encoded words, and the body was guessed to be Chinese."""

    def word(text: str) -> str:
        return f"=?{label}?B?{base64.b64encode(text.encode(codec)).decode()}?="

    raw = (
        f"From: {word(name)} <sales@acme.example>\r\nTo: alice@example.com\r\n"
        f"Subject: {word(subject)}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset={label}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + f"{body}\r\n".encode(codec)

    message = parse_message(raw)

    assert message.sender == Address("sales@acme.example", name)
    assert (message.subject, message.text) == (subject, f"{body}\n")
    assert message.defects == ()


def test_a_file_name_in_encoded_words_is_listed_as_its_sender_named_it() -> None:
    """Gmail, Outlook and Apple Mail write a name outside ASCII as RFC 2047 encoded words
    in the quoted parameter (against RFC 2231, which mail readers all accept)."""
    raw = (
        b"From: jane@acme.example\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe offer.\r\n--b\r\n"
        b'Content-Type: application/pdf; name="=?UTF-8?B?QW5nZWJvdCBNw7xsbGVyLnBkZg==?="\r\n'
        b"Content-Disposition: attachment;\r\n"
        b' filename="=?UTF-8?B?QW5nZWJvdCBNw7xsbGVyLnBkZg==?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--b--\r\n"
    )
    content = message_content(parse_mime(raw))
    assert content.attachments == (Attachment("Angebot Müller.pdf", "application/pdf", 4),)


def test_a_part_with_a_charset_holding_nul_bytes_is_listed_without_raising() -> None:
    # Found by bench/fuzz_parse.py: reading the payload raised "embedded null character".
    raw = (
        b"From: a@example.com\nContent-Type: tex\xff\xfft/plain; "
        b'charset="x-no-suc\x00\x00\x00\x00arset"\n\n' + b"\xf5" * 200 + b"\n"
    )
    content = message_content(parse_mime(raw))
    assert content.source is TextSource.NONE
    (part,) = content.attachments
    assert part.content_type.endswith("t/plain") and part.size == 0
