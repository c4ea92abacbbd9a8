"""The DATA phase: the listener reads a message as it arrives, and must end it, unstuff it and
refuse it exactly where aiosmtpd's line-by-line reading does (SMTP smuggling lives in the
difference between two readings of the same bytes)."""

from __future__ import annotations

import asyncio
from email import policy
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given, settings
from hypothesis import strategies as st

from app.models import Message
from capture.smtp import ENHANCED, CaptureHandler, CaptureSMTP, DataText, Limits
from capture.writer import Writer
from tests.conftest import Running, add_employee
from tests.mail import CAPTURE, compose
from tests.test_smtp_limits import Dialogue

LINE_LIMIT = 40  # both readers' line limit (aiosmtpd's is 1001): long lines cost little here
SIZE_LIMIT = 200


class _Recorder(CaptureHandler):
    """Keeps what each DATA delivered instead of committing it."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(
            cast(Writer, None),
            capture_addresses=frozenset({CAPTURE}),
            limits=Limits(data_dir=tmp, max_message_bytes=SIZE_LIMIT, min_free_bytes=0),
        )
        self.delivered: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        assert server.transport is not None
        if not server.transport.is_closing():  # after close, only timing decides what is read
            self.delivered.append(envelope.original_content)
        return f"250 delivered {len(self.delivered)}"


class _Ours(CaptureSMTP):
    line_length_limit = LINE_LIMIT


class _Theirs(SMTP):
    line_length_limit = LINE_LIMIT


class _Transport(asyncio.Transport):
    """Keeps what is written; closing ends the connection, as a socket's transport does."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closed:  # after close, asyncio drops what is written
            self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 25)}.get(name, default)


def _converse(make: Any, chunks: list[bytes], tmp: Path) -> tuple[list[bytes], list[bytes]]:
    """Feed the chunks to a fresh session, letting it run between them; its replies (with
    aiosmtpd's texts given our enhanced codes) and the messages it delivered."""

    async def run() -> tuple[bytes, list[bytes]]:
        handler = _Recorder(tmp)
        protocol = make(handler)
        transport = _Transport(protocol)
        protocol.connection_made(transport)
        for chunk in [b"", *chunks]:
            if chunk and not transport.closed:
                protocol.data_received(chunk)
            for _ in range(12):
                await asyncio.sleep(0)
        transport.close()
        for _ in range(3):
            await asyncio.sleep(0)
        return bytes(transport.written), handler.delivered

    written, delivered = asyncio.run(run())
    replies = [ENHANCED.get(line, line) for line in written.split(b"\r\n") if line]
    after_ehlo = next(i for i, line in enumerate(replies) if line.startswith(b"250 ")) + 1
    return replies[after_ehlo:], delivered  # the extensions each offers differ


LINES = st.lists(
    st.one_of(
        st.sampled_from([b"", b".", b"..", b".x", b"...", b"a.b", b"Subject: x", b" ."]),
        st.builds(lambda n, c: c * n, st.integers(LINE_LIMIT - 4, LINE_LIMIT + 2), st.just(b"y")),
        st.builds(lambda n: b"z" * n, st.integers(0, 3 * LINE_LIMIT)),
        st.binary(max_size=12),  # bare CR and LF, stray dots, NUL: whatever a client sends
    ),
    max_size=14,
)
ENDINGS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\n\r"])


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """A session's bytes (one or two messages, then commands), cut where the draw says."""
    start = f"EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<{CAPTURE}>\r\n"
    stream = start.encode() + b"DATA\r\n"
    for _ in range(draw(st.integers(1, 2))):
        for line in draw(LINES):
            stream += line + draw(ENDINGS)
        stream += draw(st.sampled_from([b".\r\n", b".\r\n", b"\r\n.\r\n", b""]))
        stream += draw(st.sampled_from([b"NOOP\r\n", b"RSET\r\n", b""]))
        stream += start.encode()[len("EHLO client.example\r\n") :] + b"DATA\r\n"
    stream += draw(st.sampled_from([b"", b"QUIT\r\n"]))  # (after QUIT, only timing differs)
    return draw(_cut(stream))


def _cut(stream: bytes) -> st.SearchStrategy[list[bytes]]:
    """The stream as it might arrive: cut anywhere, or in pieces of a few bytes."""

    def at(cuts: list[int]) -> list[bytes]:
        ends = sorted(cuts)
        return [stream[a:b] for a, b in zip([0, *ends], [*ends, len(stream)], strict=True)]

    anywhere = st.lists(st.integers(0, len(stream)), max_size=6).map(at)
    pieces = st.integers(1, 7).map(lambda n: [stream[i : i + n] for i in range(0, len(stream), n)])
    return st.one_of(anywhere, pieces)


@settings(max_examples=300, deadline=None)
@given(chunks=streams())
def test_data_ends_unstuffs_and_refuses_where_aiosmtpd_does(
    chunks: list[bytes], tmp_path_factory: Any
) -> None:
    _same_as_aiosmtpd(chunks, tmp_path_factory.getbasetemp())


def _same_as_aiosmtpd(chunks: list[bytes], tmp: Path) -> None:
    ours = _converse(lambda h: _Ours(h, hostname="mx.example"), chunks, tmp)
    theirs = _converse(
        lambda h: _Theirs(
            h,
            hostname="mx.example",
            ident="Mailroom ESMTP",
            decode_data=False,
            data_size_limit=SIZE_LIMIT,
            enable_SMTPUTF8=True,
        ),
        chunks,
        tmp,
    )
    assert ours == theirs


def _session(*lines: bytes) -> bytes:
    return (
        (
            f"EHLO c.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<{CAPTURE}>\r\nDATA\r\n"
        ).encode()
        + b"".join(line + b"\r\n" for line in lines)
        + b".\r\nNOOP\r\n"
    )


@pytest.mark.parametrize("size", range(SIZE_LIMIT - 3, SIZE_LIMIT + 4))
@pytest.mark.parametrize("last", [LINE_LIMIT - 3, LINE_LIMIT - 2, LINE_LIMIT - 1, LINE_LIMIT + 1])
@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_the_size_and_line_limits_hold_to_the_octet_as_aiosmtpd_counts(
    size: int, last: int, piece: int, tmp_path: Path
) -> None:
    """Messages around the size limit whose last line is around the line limit."""
    body = size - (last + 2)
    lines = [b"x" * 18] * (body // 20) + [b"w" * (body % 20 - 2)] * (body % 20 >= 2) + [b"y" * last]
    stream = _session(*lines)
    _same_as_aiosmtpd([stream[i : i + piece] for i in range(0, len(stream), piece)], tmp_path)


def test_the_end_of_data_is_found_however_the_stream_is_cut() -> None:
    """Every way of cutting a stream in two or three: the same text, the same rest."""
    stream = b"a\r\n..b\r\n.\r\n\r\n.c\r\n.\r\nNOOP\r\n"

    def read(chunks: list[bytes]) -> tuple[bytes, bytes]:
        text = DataText(size_limit=SIZE_LIMIT, line_limit=LINE_LIMIT)
        for n, chunk in enumerate(chunks):
            if text.add(chunk):
                return text.content(), text.rest + b"".join(chunks[n + 1 :])
        raise AssertionError("no end found")

    whole = read([stream])
    assert whole == (b"a\r\n.b\r\n", b"\r\n.c\r\n.\r\nNOOP\r\n")
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            assert read([stream[:i], stream[i:j], stream[j:]]) == whole, (i, j)
    assert read([b".\r\n"]) == (b"", b"")  # an empty message


@pytest.mark.parametrize("line_end", [b"", b"\r\n"], ids=["one-line", "lines"])
def test_refused_data_is_dropped_as_it_comes(line_end: bytes) -> None:
    text = DataText(size_limit=SIZE_LIMIT, line_limit=LINE_LIMIT)
    for _ in range(1000):
        assert not text.add(b"z" * 30 + line_end)
        assert text.held <= SIZE_LIMIT + LINE_LIMIT + 2

    assert text.problem is not None and text.held <= 4
    assert text.add(b"\r\n.\r\nNOOP\r\n")
    assert text.rest == b"NOOP\r\n"


def test_a_dot_stuffed_message_is_stored_as_written(running: Running) -> None:
    """smtplib doubles a leading dot; the stored text has it once again."""
    add_employee(running.runtime.sessions, "alice@example.com")
    text = ".leading dot\n..two dots\n.\nend\n"
    message = compose(body=text, message_id="<dots@example.com>")
    talk = Dialogue(running.smtp_port)
    talk.reply()
    talk.say(b"EHLO client.example.com\r\n")
    talk.say(b"MAIL FROM:<alice@example.com>\r\n")
    talk.say(f"RCPT TO:<{CAPTURE}>\r\n".encode())
    talk.say(b"DATA\r\n")
    raw = message.as_bytes(policy=policy.SMTP)
    stuffed = b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in raw.split(b"\r\n")
    )
    reply = talk.say(stuffed + b".\r\n")
    talk.close()

    assert reply[:3] == b"250", reply
    with running.runtime.sessions() as session:
        stored = session.scalars(sa.select(Message.body_text)).one()
    assert stored is not None and stored.replace("\r\n", "\n").endswith(text)
