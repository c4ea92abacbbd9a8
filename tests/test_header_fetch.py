"""Header sections read the quick way are what IMAPClient.fetch would have returned."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from imapclient.exceptions import IMAPClientError
from imapclient.response_parser import parse_fetch_response

from capture.header_fetch import fetch_header_sections, items, read_usual
from tests.dovecot import Dovecot
from tests.mail import compose

SECTION = st.binary(max_size=40).map(lambda b: b"Subject: x\r\n" + b + b"\r\n\r\n")
NUMBER = st.integers(0, 2**40)


def _usual(seq: int, uid: int, size: int, section: bytes, origin: bytes = b"<0>") -> list[Any]:
    sizes = (seq, uid, size, origin, len(section))
    line = b"%d (UID %d RFC822.SIZE %d BODY[HEADER]%s {%d}" % sizes
    return [(line, section), b")"]


@st.composite
def response(draw: st.DrawFn) -> tuple[bool, list[Any]]:
    """One message's FETCH response as imaplib hands it over, and whether it is in the
    usual form; else it is one of the other valid forms a server may use (which must go to
    imapclient's parser)."""
    seq, uid, size, section = draw(NUMBER), draw(NUMBER), draw(NUMBER), draw(SECTION)
    n = len(section)
    forms: list[list[Any]] = [
        _usual(seq, uid, size, section),
        _usual(seq, uid, size, section, origin=b""),  # a server that leaves the origin out
        [(b"%d (RFC822.SIZE %d UID %d BODY[HEADER] {%d}" % (seq, size, uid, n), section), b")"],
        [(b"%d (uid %d rfc822.size %d body[header] {%d}" % (seq, uid, size, n), section), b")"],
        [(b"%d (UID %d BODY[HEADER] {%d}" % (seq, uid, n), section), b" RFC822.SIZE %d)" % size],
        [b"%d (UID %d RFC822.SIZE %d BODY[HEADER] NIL)" % (seq, uid, size)],
        [b'%d (UID %d RFC822.SIZE %d BODY[HEADER] "")' % (seq, uid, size)],
        [b"%d (UID %d FLAGS (\\Seen))" % (seq, uid)],  # unsolicited
        [(b"%d (UID %d RFC822.SIZE %d BODY[HEADER] {%d}" % (seq, uid, size, n + 1), section), b")"],
        [(b"0%d (UID 0%d RFC822.SIZE 0%d BODY[HEADER] {%d}" % (seq, uid, size, n), section), b")"],
        [_usual(seq, uid, size, section)[0], b" FLAGS (\\Seen))"],  # more after the literal
    ]
    form = draw(st.integers(0, len(forms) - 1))
    return form <= 1, forms[form]


TWICE = [(True, _usual(1, 7, 100, b"A: b\r\n\r\n")), (True, _usual(2, 7, 200, b"C: d\r\n\r\n"))]


@given(st.lists(response(), min_size=1, max_size=5))
@example(TWICE)  # one UID answered twice: the later values win, as imapclient merges them
@example([(False, [(b"1 (UID 2 RFC822.SIZE 00 BODY[HEADER] {0}", b""), b")"])])  # "00": bytes
def test_what_is_read_the_quick_way_is_what_imapclient_reads(
    responses: list[tuple[bool, list[Any]]],
) -> None:
    data = [part for _, parts in responses for part in parts]
    quick = read_usual(data)
    if all(usual for usual, _ in responses):
        assert quick is not None  # the usual form is never left to the slow parser
    if quick is not None:
        assert quick == dict(parse_fetch_response(data, True, True))


def test_anything_but_responses_is_left_to_imapclient() -> None:
    assert read_usual([None]) is None  # no FETCH response at all
    assert read_usual([]) is None
    assert read_usual([_usual(1, 2, 3, b"A: b\r\n\r\n")[0]]) is None  # no closing parenthesis


class _Answering:
    """Stands for imaplib's connection: answers a UID FETCH with the given responses."""

    def __init__(self, data: list[Any], typ: str = "OK") -> None:
        self.data, self.typ = data, typ
        self.asked: list[tuple[str, ...]] = []

    def uid(self, *args: str) -> tuple[str, list[Any]]:
        self.asked.append(args)
        return self.typ, self.data


class _Client:
    normalise_times = True

    def __init__(self, data: list[Any], typ: str = "OK") -> None:
        self._imap = _Answering(data, typ)


def test_responses_about_messages_not_asked_for_are_left_out() -> None:
    asked = _usual(1, 5, 10, b"A: b\r\n\r\n")
    other = _usual(2, 9, 20, b"C: d\r\n\r\n")  # unsolicited: another message changed
    client = _Client([*asked, *other])
    fetched = fetch_header_sections(client, [5, 6], limit=100)
    assert list(fetched) == [5]
    assert client._imap.asked == [("FETCH", "5,6", "(BODY.PEEK[HEADER]<0.100> RFC822.SIZE)")]


def test_a_refused_fetch_is_an_error_not_an_empty_batch() -> None:
    client = _Client([None], typ="NO")  # as imaplib gives it: no FETCH response came
    with pytest.raises(IMAPClientError):
        fetch_header_sections(client, [5], limit=100)


def test_a_servers_header_sections_are_fetched_as_imapclient_fetches_them(
    dovecot: Dovecot, imap_user: str
) -> None:
    messages = [
        compose(subject="Quote", body="Here it is.\n").as_bytes(),
        compose(subject="Grüße aus Köln", sender="Jörg <jorg@example.com>").as_bytes(),
        b"Subject: no body at all\r\n\r\n",
        b"X-Long: " + b"a" * 5000 + b"\r\n\r\nbody\r\n",
    ]
    dovecot.append(imap_user, "INBOX", messages)
    with dovecot.client(imap_user) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        asked = [*uids, max(uids) + 100]  # one that is not there
        quick = fetch_header_sections(client, asked, limit=1000)
        slow = client.fetch(asked, items(1000))
    for data in slow.values():  # imapclient names the section as the server does
        data[b"BODY[HEADER]"] = data.pop(b"BODY[HEADER]<0>")
    assert quick == slow
    assert sorted(quick) == sorted(uids)
    sections = [data[b"BODY[HEADER]"] for data in quick.values()]
    assert b"Subject: no body at all\r\n\r\n" in sections
    assert b"X-Long: " + b"a" * 992 in sections, "the first 1,000 bytes of a longer section"
