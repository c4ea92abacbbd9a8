"""Hostile and broken SMTP input: each protection answers with its exact reply code."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Iterator
from email import policy
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import SMTP
from hypothesis import given
from hypothesis import strategies as st

from app.models import DecisionRecord, Message
from app.settings import Settings
from capture.smtp import (
    CaptureHandler,
    CaptureSMTP,
    Limits,
    bare_line_end,
    client_key,
    smtp_factory,
)
from capture.writer import Writer
from tests.conftest import Running, add_employee, run_service, write_lock
from tests.mail import CAPTURE, compose, send


@pytest.fixture
def strict(settings: Settings) -> Iterator[Running]:
    tight = settings.model_copy(
        update={
            "max_message_bytes": 20_000,
            "smtp_max_recipients": 2,
            "smtp_max_connections": 3,
        }
    )
    with run_service(tight) as service:
        add_employee(service.runtime.sessions, "alice@example.com")
        yield service


class Dialogue:
    """A raw SMTP conversation over a socket, for what smtplib would not send."""

    def __init__(self, port: int, *, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(source, 0)
        )
        self.buffer = b""

    def reply(self) -> bytes:
        """One complete reply (all continuation lines), as bytes without the final CRLF."""
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return b"\r\n".join(lines) or b"<closed>"
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return b"\r\n".join(lines)

    def say(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def ready_for_data(self) -> None:
        assert self.reply().startswith(b"220")
        assert self.say(b"EHLO client.example.com\r\n").startswith(b"250")
        assert self.say(b"MAIL FROM:<alice@example.com>\r\n").startswith(b"250")
        assert self.say(f"RCPT TO:<{CAPTURE}>\r\n".encode()).startswith(b"250")
        assert self.say(b"DATA\r\n").startswith(b"354")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dialogue(strict: Running) -> Iterator[Dialogue]:
    talk = Dialogue(strict.smtp_port)
    yield talk
    talk.close()


def test_greeting_names_no_software_version_and_ehlo_announces_size_and_smtputf8(
    dialogue: Dialogue,
) -> None:
    greeting = dialogue.reply()
    ehlo = dialogue.say(b"EHLO client.example.com\r\n")

    assert greeting == b"220 mailroom.example.com Mailroom ESMTP"
    assert b"250-SIZE 20000" in ehlo
    assert b"SMTPUTF8" in ehlo


def test_announced_size_over_the_limit_is_refused_at_mail_from(dialogue: Dialogue) -> None:
    dialogue.reply()
    dialogue.say(b"EHLO client.example.com\r\n")

    assert dialogue.say(b"MAIL FROM:<alice@example.com> SIZE=999999\r\n").startswith(b"552 5.3.4")


def test_message_over_the_size_limit_is_refused_with_552(strict: Running) -> None:
    code, reply = send(strict.smtp_port, compose(body=("y" * 70 + "\n") * 400))

    assert (code, reply[:5]) == (552, b"5.3.4")


def test_too_many_recipients_gets_452(dialogue: Dialogue) -> None:
    dialogue.reply()
    dialogue.say(b"EHLO client.example.com\r\n")
    dialogue.say(b"MAIL FROM:<alice@example.com>\r\n")
    rcpt = f"RCPT TO:<{CAPTURE}>\r\n".encode()

    assert dialogue.say(rcpt).startswith(b"250")
    assert dialogue.say(rcpt).startswith(b"250")
    assert dialogue.say(rcpt).startswith(b"452 4.5.3")


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\n\r"])).map(b"".join))
def test_bare_line_ends_are_found_wherever_they_are(raw: bytes) -> None:
    """The byte count agrees with the plain definition: a CR without its LF, an LF without
    its CR."""
    assert bare_line_end(raw) == bool(re.search(rb"\r(?!\n)|(?<!\r)\n", raw))


@pytest.mark.parametrize("ending", [b"\n", b"\r"], ids=["bare-LF", "bare-CR"])
def test_bare_line_endings_are_refused_so_nothing_can_be_smuggled(
    dialogue: Dialogue, ending: bytes
) -> None:
    dialogue.ready_for_data()
    smuggled = (
        b"From: alice@example.com\r\nTo: bob@customer.example\r\nSubject: hi\r\n\r\nHello"
        + ending
        + b"."
        + ending
        + b"MAIL FROM:<mallory@evil.example>\r\n.\r\n"
    )

    assert dialogue.say(smuggled).startswith(b"550 5.6.0")


def test_a_line_over_1000_octets_is_refused(dialogue: Dialogue) -> None:
    dialogue.ready_for_data()

    reply = dialogue.say(b"Subject: " + b"a" * 1200 + b"\r\n\r\nbody\r\n.\r\n")

    assert reply.startswith(b"500 5.5.6")


def test_a_header_section_over_256_kib_is_refused(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    talk = Dialogue(running.smtp_port)
    talk.ready_for_data()
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"h" * 900) for n in range(300))

    reply = talk.say(headers + b"Subject: bomb\r\n\r\nbody\r\n.\r\n")
    talk.close()

    assert reply.startswith(b"552 5.3.4")


def test_connections_over_the_cap_get_421(strict: Running) -> None:
    held = [Dialogue(strict.smtp_port) for _ in range(3)]
    for talk in held:
        assert talk.reply().startswith(b"220")
    extra = Dialogue(strict.smtp_port)

    assert extra.reply().startswith(b"421 4.7.0")
    for talk in [*held, extra]:
        talk.close()


def test_one_client_cannot_hold_every_session_but_a_trusted_relay_is_not_counted(
    settings: Settings,
) -> None:
    """Each loopback address (127.0.0.0/8) is a client of its own here."""
    limited = settings.model_copy(
        update={
            "smtp_max_connections": 10,
            "smtp_max_connections_per_client": 2,
            "trusted_relays": ["127.0.0.3/32"],
        }
    )
    with run_service(limited) as service:
        port = service.smtp_port
        mine = [Dialogue(port, source="127.0.0.2") for _ in range(2)]
        for talk in mine:
            assert talk.reply().startswith(b"220")
        third = Dialogue(port, source="127.0.0.2")
        other = Dialogue(port, source="127.0.0.1")
        relay = [Dialogue(port, source="127.0.0.3") for _ in range(3)]

        assert third.reply() == b"421 4.7.0 Too many connections from your address, try again later"
        assert other.reply().startswith(b"220")
        assert all(talk.reply().startswith(b"220") for talk in relay)

        mine.pop().close()
        deadline = time.monotonic() + 10
        while True:  # until the listener has seen that session end
            again = Dialogue(port, source="127.0.0.2")
            if again.reply().startswith(b"220") or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.05)
        assert again.say(b"NOOP\r\n").startswith(b"250")
        for talk in [*mine, third, other, *relay, again]:
            talk.close()


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9%eth0", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("", ""),
    ],
)
def test_a_client_is_its_ipv4_address_or_its_ipv6_64(host: str, key: str) -> None:
    assert client_key(host) == key


def test_an_idle_session_is_closed_with_421(settings: Settings) -> None:
    with run_service(settings.model_copy(update={"smtp_idle_timeout": 0.3})) as service:
        talk = Dialogue(service.smtp_port)
        assert talk.reply().startswith(b"220")
        time.sleep(0.8)
        assert talk.reply().startswith(b"421 4.4.2")
        talk.close()


def test_a_dripping_data_phase_is_cut_off_with_421(settings: Settings) -> None:
    with run_service(settings.model_copy(update={"smtp_data_timeout": 0.5})) as service:
        add_employee(service.runtime.sessions, "alice@example.com")
        talk = Dialogue(service.smtp_port)
        talk.ready_for_data()
        try:
            for _ in range(10):
                talk.sock.sendall(b"X-Drip: 1\r\n")
                time.sleep(0.15)
        except OSError:
            pass  # the server hung up, as it should; its last words are still buffered
        finally:
            reply = talk.reply()
            talk.close()
        assert reply.startswith(b"421 4.4.2")


def test_a_data_phase_still_sending_outlasts_the_idle_timeout(settings: Settings) -> None:
    """aiosmtpd restarts its idle timer per command: a DATA upload longer than the idle
    timeout, though never idle, was cut off. The DATA deadline bounds it; a stall does not."""
    tuned = settings.model_copy(update={"smtp_idle_timeout": 0.4, "smtp_data_timeout": 10.0})
    with run_service(tuned) as service:
        add_employee(service.runtime.sessions, "alice@example.com")
        raw = compose(body="line of text\n" * 400).as_bytes(policy=policy.SMTP)
        talk = Dialogue(service.smtp_port)
        try:
            talk.ready_for_data()
            step = len(raw) // 10 + 1
            for start in range(0, len(raw), step):  # 1.5 s in all, never 0.4 s without a byte
                talk.sock.sendall(raw[start : start + step])
                time.sleep(0.15)
            assert talk.say(b"\r\n.\r\n").startswith(b"250 2.0.0")

            assert talk.say(b"MAIL FROM:<alice@example.com>\r\n").startswith(b"250")
            assert talk.say(f"RCPT TO:<{CAPTURE}>\r\n".encode()).startswith(b"250")
            assert talk.say(b"DATA\r\n").startswith(b"354")
            talk.sock.sendall(raw[:step])
            time.sleep(0.8)  # a stall in DATA is idleness all the same
            assert talk.reply().startswith(b"421 4.4.2 Idle")
        finally:
            talk.close()


def test_a_commit_slower_than_the_idle_timeout_is_answered_and_the_session_goes_on(
    settings: Settings,
) -> None:
    """The idle timer is the client's, and it ran while we committed: a database busy for
    longer than the idle timeout cut the session with "421 Idle" (the client then sent the
    committed message again), and the client had only what was left of it after our 250."""
    with run_service(settings.model_copy(update={"smtp_idle_timeout": 0.3})) as service:
        add_employee(service.runtime.sessions, "alice@example.com")
        talk = Dialogue(service.smtp_port)
        try:
            talk.ready_for_data()
            with write_lock(service):
                talk.sock.sendall(compose().as_bytes(policy=policy.SMTP) + b"\r\n.\r\n")
                time.sleep(0.8)
            assert talk.reply().startswith(b"250 2.0.0")
            time.sleep(0.2)  # less than the idle timeout, counted from the answer
            assert talk.say(b"MAIL FROM:<alice@example.com>\r\n").startswith(b"250")
        finally:
            talk.close()


@pytest.mark.parametrize(
    "sender", [b"caf\xe9@example.com", b"al\x00ice@example.com"], ids=["not-utf-8", "nul"]
)
def test_a_sender_address_that_is_not_text_is_refused_at_mail_from(
    running: Running, sender: bytes
) -> None:
    """Never 451 on every retry: a byte that is not UTF-8 cannot be encoded for a database
    query, and PostgreSQL refuses NUL, so the message could never be decided."""
    add_employee(running.runtime.sessions, "alice@example.com")
    talk = Dialogue(running.smtp_port)
    talk.reply()
    talk.say(b"EHLO client.example.com\r\n")
    replies = [talk.say(b"MAIL FROM:<" + sender + b">\r\n")]
    if replies[0].startswith(b"250"):  # as before: the refusal came only after the message
        replies.append(talk.say(f"RCPT TO:<{CAPTURE}>\r\n".encode()))
        replies.append(talk.say(b"DATA\r\n"))
        replies.append(talk.say(compose().as_bytes(policy=policy.SMTP) + b".\r\n"))
    talk.close()

    assert replies[-1].startswith(b"553 5.1.7"), replies
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 0


def test_low_disk_space_defers_at_mail_from_with_452(settings: Settings) -> None:
    with run_service(settings.model_copy(update={"min_free_bytes": 10**18})) as service:
        talk = Dialogue(service.smtp_port)
        talk.reply()
        talk.say(b"EHLO client.example.com\r\n")
        assert talk.say(b"MAIL FROM:<alice@example.com>\r\n").startswith(b"452 4.3.1")
        talk.close()


def test_a_failing_database_write_answers_451_stores_nothing_and_the_retry_succeeds(
    running: Running,
) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    with running.runtime.db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE receipts RENAME TO receipts_away"))

    failed = send(running.smtp_port, compose())

    with running.runtime.db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE receipts_away RENAME TO receipts"))
        assert conn.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 0
        assert conn.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
    retried = send(running.smtp_port, compose())
    again = send(running.smtp_port, compose())

    assert (failed[0], failed[1][:5]) == (451, b"4.3.0")
    assert retried[0] == again[0] == 250
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1


@pytest.mark.parametrize("depth", [400, 1500])
@pytest.mark.parametrize(
    ("to", "subject"),
    [(CAPTURE, "Nested"), ("Bob <bob@customer.example>", "Undelivered Mail Returned to Sender")],
    ids=["forward-candidate", "bounce"],
)
def test_a_message_attached_hundreds_of_levels_deep_is_decided_not_deferred_for_ever(
    running: Running, depth: int, to: str, subject: str
) -> None:
    # Capture in To makes it a candidate forward, whose attached message is opened; a bounce
    # is read for the recipients it names. A 451 here would be for ever, the sender's server
    # retrying for days and failing alike.
    add_employee(running.runtime.sessions, "alice@example.com")
    nested = b"Content-Type: message/rfc822\r\n\r\n" * depth
    raw = (
        f"From: Alice <alice@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n".encode()
        + nested
        + b"From: Bob <bob@customer.example>\r\nSubject: Inner\r\n\r\nHello\r\n"
    )

    code, reply = send(running.smtp_port, raw)

    assert code == 250, reply
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 1


def test_an_html_body_nested_thousands_deep_is_decided_in_moments_not_seconds(
    running: Running,
) -> None:
    # The HTML parser walks every open element for each list that starts: 60,000 levels (360
    # KB, from any sender) held the writer, and every message behind it, for 15 s and more.
    add_employee(running.runtime.sessions, "alice@example.com")
    head = compose(body="x").as_bytes(policy=policy.SMTP).split(b"\r\n\r\n", 1)[0]
    head = head.replace(b"text/plain", b"text/html")
    raw = head + b"\r\n\r\n" + b"<ol>\r\n" * 60_000

    started = time.monotonic()
    code, reply = send(running.smtp_port, raw)
    elapsed = time.monotonic() - started

    assert code == 250, reply
    assert elapsed < 3  # a tenth of a second; well over 10 s when parsed


def test_a_bounce_of_megabytes_is_read_for_recipients_at_its_top_in_moments(
    running: Running,
) -> None:
    # flufl.bounce's detectors grow faster than the text they read: 2 MB took them 6 to 15 s,
    # 4 MB held the writer (and every message behind it) for half a minute and more.
    add_employee(running.runtime.sessions, "alice@example.com")
    failed = b"The following address(es) failed:\r\n  carol@customer.example\r\n"
    raw = (
        b"From: Alice <alice@example.com>\r\nTo: Bob <bob@customer.example>\r\n"
        b"Subject: failure notice\r\n\r\n" + failed * (4_000_000 // len(failed))
    )

    started = time.monotonic()
    code, reply = send(running.smtp_port, raw)
    elapsed = time.monotonic() - started

    assert code == 250, reply
    assert elapsed < 5  # about a second: only its first 64 KiB are read as a report


def test_an_employee_envelope_with_someone_elses_from_is_refused(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")

    code, reply = send(running.smtp_port, compose(sender="Bob <bob@customer.example>"))

    assert (code, reply[:5]) == (550, b"5.7.1")
    with running.runtime.sessions() as session:
        assert session.scalars(sa.select(DecisionRecord.outcome)).all() == ["reject"]


class _Recording(asyncio.Transport):
    """A transport that keeps each write: how many the listener made, and what."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 25)}.get(name, default)


async def _writes_for(
    protocol: asyncio.Protocol, transport: _Recording, data: bytes
) -> list[bytes]:
    transport.writes.clear()
    protocol.data_received(data)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if transport.writes and transport.writes[-1].startswith((b"354", b"220", b"250 HELP")):
            break
    return list(transport.writes)


def test_a_pipelined_group_gets_its_replies_in_one_write(tmp_path: Path) -> None:
    handler = CaptureHandler(
        cast(Writer, None),  # the group ends at DATA's 354: no message reaches a writer
        capture_addresses=frozenset({CAPTURE}),
        limits=Limits(data_dir=tmp_path),
    )

    async def converse() -> list[bytes]:
        protocol = smtp_factory(handler, hostname="mx.example")()
        transport = _Recording()
        protocol.connection_made(transport)
        await _writes_for(protocol, transport, b"")
        await _writes_for(protocol, transport, b"EHLO client.example.com\r\n")
        group = f"MAIL FROM:<alice@example.com>\r\nRCPT TO:<{CAPTURE}>\r\nDATA\r\n".encode()
        writes = await _writes_for(protocol, transport, group)
        transport.close()
        protocol.connection_lost(None)
        return writes

    writes = asyncio.run(converse())

    assert len(writes) == 1, writes  # RFC 2920 allows it; one segment instead of three
    assert re.fullmatch(rb"250 2\.1\.0 [^\r]*\r\n250 2\.1\.5 [^\r]*\r\n354 [^\r]*\r\n", writes[0])


def test_a_pipelined_group_gets_every_reply_in_order(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    talk = Dialogue(running.smtp_port)
    talk.reply()
    talk.say(b"EHLO client.example.com\r\n")
    group = f"MAIL FROM:<alice@example.com>\r\nRCPT TO:<{CAPTURE}>\r\nDATA\r\n".encode()
    replies = []
    for n in range(10):
        talk.sock.sendall(group)
        replies += [talk.reply()[:3] for _ in range(3)]
        body = compose(message_id=f"<pipelined-{n}@example.com>").as_bytes(policy=policy.SMTP)
        replies.append(talk.say(body + b"\r\n.\r\n")[:3])
    talk.close()

    assert replies == [b"250", b"250", b"354", b"250"] * 10


def test_replies_held_for_a_pipelined_group_go_out_when_the_session_waits(
    running: Running,
) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    talk = Dialogue(running.smtp_port)
    talk.reply()
    talk.say(b"EHLO client.example.com\r\n")
    # The message's first line arrives with the group (a client that did not wait for 354):
    # the server reads it, then waits for the rest, and must not sit on its replies meanwhile.
    group = f"MAIL FROM:<alice@example.com>\r\nRCPT TO:<{CAPTURE}>\r\nDATA\r\n".encode()
    talk.sock.sendall(group + b"From: Alice <alice@example.com>\r\n")
    replies = [talk.reply() for _ in range(3)]
    # And a group ending in QUIT gets every reply before the connection closes.
    talk.sock.sendall(b"Subject: early\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    after = [talk.reply() for _ in range(4)]
    talk.close()

    assert [r[:3] for r in replies] == [b"250", b"250", b"354"]
    assert [r[:3] for r in after] == [b"250", b"250", b"250", b"221"]


def _listener(tmp_path: Path) -> CaptureSMTP:
    handler = CaptureHandler(
        cast(Writer, None),
        capture_addresses=frozenset({CAPTURE}),
        limits=Limits(data_dir=tmp_path),
    )

    async def make() -> CaptureSMTP:
        return CaptureSMTP(handler, hostname="mx.example")

    return asyncio.run(make())


MAIL_ARGUMENTS = st.one_of(
    st.text(alphabet='<>@ ."\\()[]abcXYZ09=,;:é\t-', max_size=60),
    st.builds(
        "<{}@{}>{}".format,
        st.text(alphabet='abc."\\ @é', max_size=70),
        st.sampled_from(["example.com", "[127.0.0.1]", "x", ""]),
        st.sampled_from(["", " SIZE=100", " BODY=8BITMIME SMTPUTF8", "  "]),
    ),
)


@given(st.lists(MAIL_ARGUMENTS, max_size=6))
def test_addresses_in_mail_and_rcpt_read_as_aiosmtpd_reads_them_also_when_remembered(
    arguments: list[str],
) -> None:
    listener = _listener(Path("var"))
    for argument in arguments + arguments:  # the second time from memory
        assert _reading(listener._getaddr, argument) == _reading(
            lambda a: SMTP._getaddr(listener, a), argument
        )


def _reading(
    getaddr: Callable[[str], tuple[str | None, str | None]], argument: str
) -> tuple[str | None, str | None] | str:
    """The address read, or the error raised (the header parser has its own bugs: an
    IndexError on some hostile arguments, which the listener answers with 451)."""
    try:
        return getaddr(argument)
    except Exception as error:
        return type(error).__name__


def test_a_remembered_address_still_meets_the_local_part_limit() -> None:
    listener = _listener(Path("var"))
    assert listener._getaddr("<abcd@example.com>") == ("abcd@example.com", "")

    listener.local_part_limit = 3

    assert listener._getaddr("<abcd@example.com>") == (None, None)
    assert listener._getaddr("<abc@example.com>") == ("abc@example.com", "")
