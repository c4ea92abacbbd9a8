"""Parse: the recipients a delivery-failure report says could not be reached."""

from __future__ import annotations

import logging
from email.message import Message

from flufl.bounce import scan_message

from capture.parse import ParsedMessage, normalize_address, parse_mime

MAX_RECIPIENTS = 50
# A report names the recipients at its top, before what it returns of the original message.
# flufl.bounce's detectors grow faster than the text they read (a megabyte: 5 s; 25 MiB, the
# size a message may have: many minutes of the writer, every message behind it waiting).
MAX_REPORT_BYTES = 64 * 1024
_FAILED_RECIPIENTS = b"x-failed-recipients"  # Exim's header: the one a detector reads

# flufl.bounce logs every detector that trips over an encoded header, with a traceback: noise
# (we fall back to our own phrases), costly to format, and an exception's text may quote the
# message. Quieted here, where it is imported, so every process that scans is quiet.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def report_tree(raw: bytes) -> Message:
    """What a report is read from: its first MAX_REPORT_BYTES, as parse_message parses them
    (bounded alike: a message nested beyond reason is its headers)."""
    return parse_mime(raw[:MAX_REPORT_BYTES])


def detected(parsed: Message) -> set[bytes]:
    """The addresses flufl.bounce's detectors find in a report; none if one of them fails."""
    try:
        return set(scan_message(parsed))
    except Exception:  # its detectors trip over some encoded headers
        return set()


def bounced_recipients(message: ParsedMessage, *, headers_only: bool = False) -> frozenset[str]:
    """From the report's `message/delivery-status` part (RFC 3464: Final-Recipient of each
    failed action), else from flufl.bounce's detectors for the non-standard formats.

    `headers_only`: the message is a header section alone (a mailbox message decided on its
    headers). Without a body there is no report part, and of flufl.bounce's detectors only
    Exim's reads a header (X-Failed-Recipients); the others read the body. So a section that
    does not even contain that header's name names nobody, and is not parsed: 0.3 ms saved
    for each bounce a mailbox sync drops on its headers."""
    if headers_only and _FAILED_RECIPIENTS not in message.raw.lower():
        return frozenset()
    parsed = report_tree(message.raw)
    found = _from_report(parsed)
    if not found:
        found = {_text(b) for b in detected(parsed)}
    normalized = (normalize_address(a) for a in sorted(found)[:MAX_RECIPIENTS])
    return frozenset(a for a in normalized if a)


def _from_report(parsed: Message) -> set[str]:
    found: set[str] = set()
    for part in list(parsed.walk())[:50]:
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, Message):
                continue
            action = str(block.get("Action", "failed")).strip().lower()
            recipient = block.get("Final-Recipient") or block.get("Original-Recipient")
            if recipient and action.startswith("failed"):
                found.add(str(recipient).rpartition(";")[2].strip().strip("<>"))
    return found


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
