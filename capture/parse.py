"""Parse: raw RFC 5322 bytes into a ParsedMessage, pure and never raising on bad input."""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.errors import (
    CharsetError,
    FirstHeaderLineIsContinuationDefect,
    HeaderParseError,
    InvalidHeaderDefect,
    MisplacedEnvelopeHeaderDefect,
    MissingHeaderBodySeparatorDefect,
)
from email.header import decode_header, make_header
from email.headerregistry import Address as HeaderAddress
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import Compat32
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any

import idna

from capture.content import MAX_TEXT_CHARS as MAX_TEXT_CHARS
from capture.content import Attachment as Attachment
from capture.content import charset_for, message_content
from capture.content import clean as clean

MAX_ADDRESSES_PER_HEADER = 500
_LOCAL_PART = re.compile(r"^[^\s@<>()\[\],;:\"\\]{1,64}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9-]{1,63})+$")
# Inputs that cost seconds or crash a naive parse, all seen in the corpora or the fuzzer: a
# Content-Type of 7,000 empty parameters, 1 MB of quotes in a To header, 3,000 nested
# multiparts (the parser recurses per level). MIME headers are trimmed, address headers read
# one mailbox at a time, and a message nested or split beyond reason is read for headers only.
MAX_MIME_PARAMS = 12
MAX_MIME_HEADER_CHARS = 2_000
MAX_MAILBOX_CHARS = 320  # one mailbox with its display name, as written
MAX_ADDRESS_HEADER_CHARS = 64_000
MAX_MULTIPARTS = 60  # boundary declarations in one message
MAX_DELIMITER_LINES = 2_000  # lines starting "--", where every MIME part starts
HEADER_CAP = 1024 * 1024  # a header section larger than this is not a message we decide on
# Headers also kept whole (not cut as `headers` keeps them): the address headers, and
# References, whose newest ids are at its end.
_WHOLE_HEADERS = ("from", "to", "cc", "reply-to", "references")
_MIME_HEADERS = frozenset(("content-type", "content-disposition", "content-transfer-encoding"))
_EMPTY_PARAMS = re.compile(r";[\s;]*;")
_BOUNDARY_PARAM = re.compile(rb"boundary\s*=", re.IGNORECASE)
_DELIMITER_LINE = re.compile(rb"\n--")
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
_ADDRESS_SPLIT = re.compile(r'"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|[^",(]+|[,(]')
_ADDRESS_HEADER = policy.default.header_factory
MAX_REFERENCES = 100  # Message-IDs kept of a References header
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")
_COMMENT = re.compile(r"\([^()]*\)")
_ID_TEXT = re.compile(r"[^<>()\s]")  # what an id without brackets has besides them
_WORD_CHARSET = re.compile(r"(?<==\?)[A-Za-z0-9_.:-]{1,40}(?=[?*])")  # of an encoded word
# The one shape most headers take, read without the header registry: `Name <user@host>` or
# `user@host`, with no quotes, comments, groups or encoded words that could make it ambiguous.
# The local part as the registry returns it: written as is, apostrophes and the stray dots
# of obsolete forms (`w..cantrell`, `a.@`, `.hall`, common in old corpora) included.
_LOCAL = r"[A-Za-z0-9_%+='.-]{1,64}"
_LABEL = r"[A-Za-z0-9-]{1,63}"
_MAILBOX = rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})+"
_SIMPLE_MAILBOX = re.compile(
    rf"\s*(?:([A-Za-z0-9][A-Za-z0-9 .'_-]{{0,100}}?)\s*<({_MAILBOX})>|({_MAILBOX}))\s*"
)
# Also common: `"Doe, John" <user@host>` and `<user@host>`. A quoted name of printable ASCII
# without backslashes or encoded words is read by the registry as written, spaces included.
_QUOTED_MAILBOX = re.compile(rf'\s*(?:"((?:(?!=\?)[ !#-\[\]-~]){{0,100}})"\s*)?<({_MAILBOX})>\s*')
# And the old `user@host (Full Name)`: the registry gives a trailing comment no display name.
_COMMENTED_MAILBOX = re.compile(rf"\s*({_MAILBOX})\s*\([^()\\]{{0,200}}\)\s*")
# The instants a Date may name: those Python holds in UTC (years 1 to 9999; PostgreSQL's
# timestamptz reaches far beyond, SQLite stores ISO text), a day short of each end, so that
# the same instant also reads as a date in any time zone (an offset is under a day). A date
# written late on 31 Dec 9999 west of UTC falls outside: it is no date, as an unreadable one.
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)
# A date written as RFC 5322 writes one: day, month, year, 24-hour time and a zone it names
# (a comment may follow). The stdlib reads far more, wrongly: Outlook's "Monday, March 4,
# 2024 4:12 PM" (local time, no zone) as 04:12 UTC.
_RFC5322_DATE = re.compile(
    r"\s*(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?"
    r"\s+(?:[+-]\d{4}|UT|GMT|[ECMP][SD]T)(?:\s*\([^()]{0,60}\))?\s*",
    re.IGNORECASE,
)


class _BoundedCompat32(Compat32):
    """compat32 (ten times faster than policy.default at building the tree), with MIME
    headers trimmed before anything parses their parameters."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if name.lower() in _MIME_HEADERS and len(value) > 200:
            value = _EMPTY_PARAMS.sub(";", value[:MAX_MIME_HEADER_CHARS])
            value = ";".join(value.split(";", MAX_MIME_PARAMS + 1)[: MAX_MIME_PARAMS + 1])
        return super().header_fetch_parse(name, value)


_POLICY = _BoundedCompat32()
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # as the parser splits lines
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")  # feedparser's headerRE
# A header section of fields alone (no unix-from line, nothing before the blank line that is
# not a field or its continuation, nothing after it), and its fields with their values as
# compat32 keeps them: leading blanks dropped, folds kept, the last line break dropped.
# Envelope lines (`From ` without a colon after the word, as mbox files start each message)
# may stand among the fields, never followed by a continuation line.
_WELL_FORMED = re.compile(
    r"(?:[\041-\071\073-\176]+:[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*(?:\r\n|\r|\n|$)"
    r"|From [^\r\n]*(?:\r\n|\r|\n|$))*"
    r"(?:\r\n|\r|\n)?"
)
_FIELD = re.compile(  # each match ends where the next one starts: no text scanned twice
    r"([\041-\071\073-\176]+):[ \t]*([^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)(?:\r\n|\r|\n)?"
    r"|(From [^\r\n]*)(?:\r\n|\r|\n)?"
)
_PARSER = BytesParser(policy=_POLICY)
_HEADER_PARSER = BytesHeaderParser(policy=_POLICY)


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: normalized address (domain lowercased) and the display name as written."""

    address: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]


@dataclass(frozen=True)
class ParsedMessage:
    """What Mailroom knows about one message after parsing; immutable, content included."""

    digest: str
    size: int
    message_id: str | None
    subject: str
    date: datetime | None
    from_: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    in_reply_to: str | None
    references: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    text: str
    content_types: tuple[str, ...]
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    raw: bytes = field(default=b"", repr=False, compare=False)

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        return self._first_values.get(name.lower())

    @cached_property
    def _first_values(self) -> dict[str, str]:
        """Each header's first value: the policy asks for some thirty headers per message."""
        first: dict[str, str] = {}
        for key, value in self.headers:
            first.setdefault(key, value)
        return first

    @property
    def sender(self) -> Address | None:
        return self.from_[0] if self.from_ else None

    @property
    def recipients(self) -> tuple[Address, ...]:
        return self.to + self.cc

    @cached_property
    def participants(self) -> tuple[Address, ...]:
        """Every distinct address in From, To, Cc and Reply-To, in that order."""
        seen: dict[str, Address] = {}
        for addr in self.from_ + self.to + self.cc + self.reply_to:
            seen.setdefault(addr.address, addr)
        return tuple(seen.values())


def message_fields(message: ParsedMessage) -> tuple[Any, ...]:
    """A parsed message as plain values, its raw bytes left out: what the SMTP listener sends
    its writer process. Pickled, the dataclasses cost four times as much as these tuples,
    and a datetime (its time zone pickled as an object) costs more than the rest together."""
    m = message
    return (
        m.digest,
        m.size,
        m.message_id,
        m.subject,
        m.date and m.date.isoformat(),
        *(tuple((a.address, a.name) for a in found) for found in (m.from_, m.to, m.cc, m.reply_to)),
        m.in_reply_to,
        m.references,
        m.headers,
        m.text,
        m.content_types,
        tuple((a.filename, a.content_type, a.size) for a in m.attachments),
        m.defects,
    )


def message_from_fields(fields: tuple[Any, ...], raw: bytes) -> ParsedMessage:
    """The parsed message that `message_fields` gave these values for, with its raw bytes."""
    (digest, size, message_id, subject, date, from_, to, cc, reply_to, *rest) = fields
    in_reply_to, references, headers, text, content_types, attachments, defects = rest
    return ParsedMessage(
        digest=digest,
        size=size,
        message_id=message_id,
        subject=subject,
        date=date and datetime.fromisoformat(date),
        from_=tuple(Address(*a) for a in from_),
        to=tuple(Address(*a) for a in to),
        cc=tuple(Address(*a) for a in cc),
        reply_to=tuple(Address(*a) for a in reply_to),
        in_reply_to=in_reply_to,
        references=references,
        headers=headers,
        text=text,
        content_types=content_types,
        attachments=tuple(Attachment(*a) for a in attachments),
        defects=defects,
        raw=raw,
    )


def normalize_address(raw: str) -> str | None:
    """Lowercase the domain, keep the local part (its accents composed, NFC, as RFC 6532 asks
    and email-validator makes a contact's: `é` written as `e` and a combining accent is the
    same address), and refuse anything that is not a mailbox."""
    if clean(raw) != raw:
        return None
    local, at, written = raw.strip().rpartition("@")
    if not at:
        return None
    if not local.isascii():
        local = unicodedata.normalize("NFC", local)
    domain = mail_domain(written)
    if domain is None or not _LOCAL_PART.match(local) or not _DOMAIN.match(domain):
        return None
    return f"{local}@{domain}"


def mail_domain(domain: str) -> str | None:
    """A domain as addresses hold it: lowercased, a Unicode one in IDNA 2008 with UTS 46
    mapping, as email-validator and mail servers have it; None if it has no such form."""
    if domain.isascii():  # IDNA leaves ASCII as it is; _DOMAIN checks the labels
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return None


def as_mail_spells_it(address: str) -> str:
    """An address written with a Unicode domain, as an SMTPUTF8 envelope or the configuration
    may write it (`anna@bücher.example`), with its domain as every parsed address and every
    employee's has it (`anna@xn--bcher-kva.example`, see mail_domain). Anything else as it
    is: only the domain changes, not the case."""
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    spelled = mail_domain(domain) if at else None
    return f"{local}@{spelled}" if spelled is not None else address


def earlier_spelling(address: str) -> str | None:
    """How releases before 2026-11-24 stored this (normalized) address, where that differs.
    They encoded a Unicode domain by IDNA 2003, which maps some letters away (straße.example
    became strasse.example, another domain): suppression and personal-contact digests, and
    rows, made then hold that spelling. None for all other addresses (any ASCII domain)."""
    local, _, domain = address.rpartition("@")
    if "xn--" not in domain:
        return None
    try:
        earlier = idna.decode(domain).encode("idna").decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return None
    return f"{local}@{earlier}" if earlier != domain else None


def header_section_of(raw: bytes) -> bytes:
    """A whole message's header section, with the blank line that ends it (what IMAP's
    BODY[HEADER] is), at most HEADER_CAP bytes of it."""
    end = _END_OF_HEADERS.search(raw, 0, HEADER_CAP)
    return raw[: end.end()] if end else raw[:HEADER_CAP]


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw bytes; defects are recorded on the result, never raised."""
    return parse_message_and_mime(raw)[0]


def parse_message_and_mime(raw: bytes) -> tuple[ParsedMessage, Message]:
    """parse_message, and the MIME tree it read, for extraction (capture.content) without
    parsing the bytes twice."""
    defects: list[str] = []
    msg = _parse(raw, defects)
    content = message_content(msg)
    return _parsed(
        msg,
        digest=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        text=content.text,
        content_types=tuple(part.get_content_type() for part in _walk(msg)),
        attachments=content.attachments,
        defects=(*defects, *content.defects),
        raw=raw,
    ), msg


def parse_mime(raw: bytes) -> Message:
    """The MIME tree that parse_message reads, bounded the same way."""
    return _parse(raw, [])


def _parse(raw: bytes, defects: list[str]) -> Message:
    """The MIME tree; for a message nested or split beyond reason, its headers alone."""
    single = _single_part(raw)
    if single is not None:
        return single
    if not _beyond(_BOUNDARY_PARAM, raw, MAX_MULTIPARTS) and not (
        _beyond(_DELIMITER_LINE, raw, MAX_DELIMITER_LINES) and _beyond(_BOUNDARY_PARAM, raw, 0)
    ):
        try:
            return _PARSER.parsebytes(raw)
        except RecursionError:
            pass
    defects.append("too-many-multiparts")
    headers_only = _HEADER_PARSER.parsebytes(raw)
    headers_only.set_payload("")
    return headers_only


def _single_part(raw: bytes) -> Message | None:
    """Most mail is one part with well-formed headers: read as compat32's parser reads it (the
    same fields, defects and payload) without its feed machinery, which costs as much as the
    rest of parsing. None for anything else (multiparts, attached messages, a header section
    that is not fields alone), which the parser reads."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        cut = lf + 2
    elif crlf >= 0:
        cut = crlf + 4
    else:
        return None
    text = raw.decode("ascii", "surrogateescape")
    read = _well_formed_fields(text[:cut])
    if read is None or read[1]:  # the parser would begin the body with an envelope line
        return None
    msg = read[0]
    if msg.get_content_maintype() in ("multipart", "message"):
        return None
    msg.set_payload(text[cut:])
    return msg


def _beyond(pattern: re.Pattern[bytes], raw: bytes, limit: int) -> bool:
    return sum(1 for _ in itertools.islice(pattern.finditer(raw), limit + 1)) > limit


def parse_headers(header: bytes, *, size: int) -> ParsedMessage:
    """A message known by its header section alone (a mailbox's `BODY.PEEK[HEADER]`) and
    the size its server reports: no text, no parts; its digest is the header section's."""
    msg = header_section(header)
    return _parsed(
        msg,
        digest=hashlib.sha256(header).hexdigest(),
        size=size,
        text="",
        content_types=(msg.get_content_type(),),
        attachments=(),
        defects=(),
        raw=header,
    )


def header_section(header: bytes) -> Message:
    """The header fields of a header section, as compat32's parser reads them with
    `headersonly` (the same fields, unix-from line and defects) in a third of its time: its
    feed machinery is built for bodies that arrive in pieces."""
    text = header.decode("ascii", "surrogateescape")
    read = _well_formed_fields(text)  # most: each field read by one pattern
    if read is not None:
        return read[0]
    msg = Message(policy=_POLICY)
    fields: list[str] = []
    for line in _LINE.findall(text):
        if not _HEADER_LINE.match(line):
            if line[0] not in "\r\n":  # text where the blank line should be: the body
                msg.defects.append(MissingHeaderBodySeparatorDefect())
            break
        fields.append(line)
    lines: list[str] = []  # the field being read, continuation lines included
    last = len(fields) - 1
    for number, line in enumerate(fields):
        if line[0] in " \t":
            if lines:
                lines.append(line)
            else:
                msg.defects.append(FirstHeaderLineIsContinuationDefect(line))
            continue
        if lines:
            msg.set_raw(*_field(lines))
            lines = []
        if line.startswith("From "):
            if number == 0:
                msg.set_unixfrom(line.rstrip("\r\n"))
            elif number != last:  # a last one is left to the body, which is not read here
                msg.defects.append(MisplacedEnvelopeHeaderDefect(line))
            continue
        if line[0] == ":":
            msg.defects.append(InvalidHeaderDefect("Missing header name."))
            continue
        lines = [line]
    if lines:
        msg.set_raw(*_field(lines))
    return msg


def _well_formed_fields(text: str) -> tuple[Message, bool] | None:
    """A header section of fields alone, read by one pattern; None for any other. Also
    whether a last envelope line was left out: the parser leaves it to the body."""
    if not _WELL_FORMED.fullmatch(text):
        return None
    msg = Message(policy=_POLICY)
    found = _FIELD.findall(text)
    last = len(found) - 1
    for number, (name, value, envelope) in enumerate(found):
        if not envelope:
            msg.set_raw(name, value)
        elif number == 0:
            msg.set_unixfrom(envelope)
        elif number != last:
            msg.defects.append(MisplacedEnvelopeHeaderDefect(envelope))
    return msg, last > 0 and bool(found[last][2])


def _field(lines: list[str]) -> tuple[str, str]:
    name, value = lines[0].split(":", 1)
    return name, (value.lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n")


def _parsed(
    msg: Message,
    *,
    digest: str,
    size: int,
    text: str,
    content_types: tuple[str, ...],
    attachments: tuple[Attachment, ...],
    defects: tuple[str, ...],
    raw: bytes,
) -> ParsedMessage:
    found = [type(d).__name__ for d in msg.defects[:20]]
    headers, whole = _headers(msg, found)
    first: dict[str, str] = {}
    for key, value in headers:
        first.setdefault(key, value)
    return ParsedMessage(
        digest=digest,
        size=size,
        message_id=_message_id(first.get("message-id")),
        subject=first.get("subject", "")[:998],
        date=_date(first.get("date"), found),
        from_=_addresses(whole["from"], "from", found),
        to=_addresses(whole["to"], "to", found),
        cc=_addresses(whole["cc"], "cc", found),
        reply_to=_addresses(whole["reply-to"], "reply-to", found),
        in_reply_to=_message_id(first.get("in-reply-to")),
        references=_references(whole["references"][:1], found),
        headers=headers,
        text=text,
        content_types=content_types,
        attachments=attachments,
        defects=tuple(dict.fromkeys([*found, *defects])),
        raw=raw,
    )


def _headers(
    msg: Message, defects: list[str]
) -> tuple[tuple[tuple[str, str], ...], dict[str, list[str]]]:
    """The first 500 header values, unfolded and with RFC 2047 words decoded; and the values
    of _WHOLE_HEADERS as written. Only address headers go through the (ten times slower)
    header registry, in _addresses."""
    pairs: list[tuple[str, str]] = []
    whole: dict[str, list[str]] = {name: [] for name in _WHOLE_HEADERS}
    for number, (key, value) in enumerate(msg.raw_items()):
        name = key.lower()  # names are printable ASCII: the parser's header line pattern
        values = whole.get(name)
        if values is not None:
            values.append(value)
        if number >= 500:
            continue
        text = str(value)[:4000]
        pairs.append((name[:100], _unfolded(text, key, defects)))
    return tuple(pairs), whole


def _unfolded(text: str, key: str, defects: list[str]) -> str:
    """A header value on one line, its RFC 2047 words decoded, storable."""
    if text.isascii() and "=?" not in text and "\x00" not in text:  # most: nothing to do
        return " ".join(text.split())
    return clean(" ".join(_decoded(_utf8(text), key, defects).split()))


def _decoded(value: str, key: str, defects: list[str]) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(_relabelled(value))))
    except (LookupError, UnicodeError, ValueError, HeaderParseError, CharsetError):
        defects.append(f"undecodable-header:{key.lower()[:40]}")
        return value


def _message_id(value: str | None) -> str | None:
    """The first `<id>` of a Message-ID or In-Reply-To, else the value as written (some
    mailers leave out the brackets). None for one that names nothing: `<>`, `< >` or a
    comment alone, which unrelated messages share, are no more an id than a missing one."""
    if not value:
        return None
    match = _MESSAGE_ID.search(value)
    if match:
        return match.group(0)
    if not _ID_TEXT.search(_COMMENT.sub("", value)):
        return None
    return value.strip()[:250]


def _references(values: list[str], defects: list[str]) -> tuple[str, ...]:
    """The Message-IDs the (first) References names, at most MAX_REFERENCES: its first (the
    thread's root) and its newest (the last, the parent among them). Read from the whole
    value, not the one cut short in `headers`: a long thread's newest ids are at its end."""
    if not values:
        return ()
    ids = _MESSAGE_ID.findall(_unfolded(values[0], "references", defects))
    if len(ids) <= MAX_REFERENCES:
        return tuple(ids)
    return (ids[0], *ids[1 - MAX_REFERENCES :])


def parse_date(value: str | None) -> datetime | None:
    """A date as a Date header writes it (RFC 5322, with its zone), else None."""
    if not value or not _RFC5322_DATE.fullmatch(value[:200]):
        return None
    return _date(value, [])


def _date(value: str | None, defects: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not _EARLIEST <= parsed <= _LATEST:  # compared as instants: no conversion to overflow
        defects.append("date-out-of-range")
        return None
    return parsed


def _addresses(values: list[str], name: str, defects: list[str]) -> tuple[Address, ...]:
    result: dict[str, Address] = {}
    for value in values[:10]:
        value = _relabelled(value) if "=?" in value else value
        for piece in _address_pieces(_utf8(value), name, defects):
            for address, display in _mailboxes(piece, name, defects):
                normalized = normalize_address(address)
                if normalized is None:
                    defects.append(f"invalid-address-in-{name}")
                    continue
                result.setdefault(normalized, Address(normalized, clean(display[:200])))
                if len(result) >= MAX_ADDRESSES_PER_HEADER:
                    return tuple(result.values())
    return tuple(result.values())


def _relabelled(value: str) -> str:
    """Encoded words labelled with a charset that stands for a larger one (gb2312 for GBK),
    or that Python knows by another name (windows-874), labelled as Python reads them."""
    return _WORD_CHARSET.sub(lambda label: charset_for(label.group(0)), value)


def _utf8(value: str) -> str:
    """A header written in raw UTF-8 (RFC 6532) reaches us with its bytes escaped."""
    if value.isascii():
        return value
    try:
        return value.encode("ascii", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return value


def _address_pieces(value: str, name: str, defects: list[str]) -> list[str]:
    """A header value cut at its top-level commas (not those in quotes or comments), so that
    the header registry only ever reads one mailbox at a time."""
    pieces: list[str] = []
    current: list[str] = []
    for part in _ADDRESS_SPLIT.findall(value[:MAX_ADDRESS_HEADER_CHARS]):
        if part == ",":
            pieces.append("".join(current))
            current = []
        else:
            current.append(part)
    pieces.append("".join(current))
    kept = []
    for piece in pieces:
        if "@" not in piece:
            continue  # an empty piece, a group's name, or text that holds no address
        if len(piece) > MAX_MAILBOX_CHARS:
            defects.append(f"invalid-address-in-{name}")
            continue
        kept.append(" ".join(piece.split()))
    return kept[:MAX_ADDRESSES_PER_HEADER]


def _mailboxes(value: str, name: str, defects: list[str]) -> list[tuple[str, str]]:
    """(address, display name) pairs of one mailbox (or one address header)."""
    simple = _SIMPLE_MAILBOX.fullmatch(value)
    if simple:
        display, bracketed, bare = simple.groups()
        return [(bracketed or bare, " ".join((display or "").split()))]
    quoted = _QUOTED_MAILBOX.fullmatch(value)
    if quoted:
        display, address = quoted.groups()
        return [(address, display or "")]
    commented = _COMMENTED_MAILBOX.fullmatch(value)
    if commented:
        return [(commented.group(1), "")]
    try:
        header = _ADDRESS_HEADER(name, value)
        mailboxes: tuple[HeaderAddress, ...] = header.addresses
    except Exception:  # the header registry rejects some hostile forms outright
        defects.append(f"unparsable-{name}")
        return []
    return [
        (f"{m.username}@{m.domain}", m.display_name) for m in mailboxes[:MAX_ADDRESSES_PER_HEADER]
    ]


def _walk(msg: Message) -> list[Message]:
    return list(itertools.islice(msg.walk(), 200))
