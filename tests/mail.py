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
    port: int, msg: EmailMessage, *, mail_from: str = "alice@example.com", rcpt: str = CAPTURE
) -> tuple[int, bytes]:
    """Send with a BCC to the capture address; returns the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.com")
        client.mail(mail_from)
        code, reply = client.rcpt(rcpt)
        if code >= 400:
            return code, reply
        return client.data(msg.as_bytes(policy=policy.SMTP))
