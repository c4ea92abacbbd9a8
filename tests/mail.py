"""Building and sending test messages through the real listener."""

from __future__ import annotations

import smtplib
from email import policy
from email.message import EmailMessage

CAPTURE = "capture@mailroom.example.com"


def compose(
    *,
    sender: str = "Alice Example <alice@example.com>",
    to: str = "Bob Builder <bob@customer.example>",
    subject: str = "Quote for 20 licences",
    body: str = "Hi Bob,\n\nhere is the quote we discussed.\n\nAlice\n",
    headers: dict[str, str] | None = None,
    message_id: str | None = "<quote-1@example.com>",
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 23 Nov 2026 09:00:00 +0000"
    if message_id:
        msg["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg


def send(
    port: int,
    msg: EmailMessage | bytes,
    *,
    mail_from: str = "alice@example.com",
    rcpt: str = CAPTURE,
) -> tuple[int, bytes]:
    """Send with a BCC to the capture address; returns the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.com")
        client.mail(mail_from)
        code, reply = client.rcpt(rcpt)
        if code >= 400:
            return code, reply
        raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=policy.SMTP)
        return client.data(raw)


def decided(reply: tuple[int, bytes]) -> int:
    """The decision a `250` reply of `send` names ("Accepted, decision N")."""
    code, text = reply
    assert code == 250, text
    return int(text.rsplit(b" ", 1)[1])


def _dated(date: str) -> bytes:
    msg = compose(to="Carol <carol@customer.example>", message_id="<unstorable@example.com>")
    msg.replace_header("Date", date)
    return msg.as_bytes(policy=policy.SMTP)


def _with_nul() -> bytes:
    msg = compose(
        to="Ca@NUL@rol <carol@customer.example>",
        subject="Quote @NUL@ 20 licences",
        body="Hi Carol,\n\nthe quote@NUL@.\n",
        message_id="<unstorable@example.com>",
    )
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="q@NUL@.pdf")
    return msg.as_bytes(policy=policy.SMTP).replace(b"@NUL@", b"\x00")


# Business mail carrying a value that no database column holds as written: parsing must make
# each storable, or filing fails on every channel and on every retry.
UNSTORABLE = {
    "date-in-utc-year-10000": _dated("Fri, 31 Dec 9999 23:00:00 -1200"),
    "nul-in-its-text": _with_nul(),  # PostgreSQL refuses NUL in text; SQLite keeps it
}
