"""Parse: raw RFC 5322 bytes into a ParsedMessage, pure and never raising on bad input."""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.errors import CharsetError, HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import EmailPolicy
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

MAX_TEXT_CHARS = 1_000_000
MAX_ADDRESSES_PER_HEADER = 500
_LOCAL_PART = re.compile(r"^[^\s@<>()\[\],;:\"\\]{1,64}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9-]{1,63})+$")
_TAGS = re.compile(r"<[^>]*>")
# The stdlib's header registry is superlinear in some inputs (a Content-Type of 7,000 empty
# parameters, found in the SpamAssassin corpus, cost 5 s; 10 KB of quotes in a To, 2 s), and
# its multipart parser recurses per nesting level. So MIME headers reach it trimmed,
# address headers in bounded pieces, and deeply nested messages are read for headers only.
MAX_MIME_PARAMS = 12
MAX_MIME_HEADER_CHARS = 2_000
MAX_MAILBOX_CHARS = 320  # one mailbox with its display name, as written
MAX_ADDRESS_HEADER_CHARS = 64_000
MAX_MULTIPARTS = 60  # boundary declarations in one message
MAX_DELIMITER_LINES = 2_000  # lines starting "--", where every MIME part starts
_MIME_HEADERS = frozenset(("content-type", "content-disposition", "content-transfer-encoding"))
_EMPTY_PARAMS = re.compile(r";[\s;]*;")
_BOUNDARY_PARAM = re.compile(rb"boundary\s*=", re.IGNORECASE)
_DELIMITER_LINE = re.compile(rb"\n--")
_ADDRESS_SPLIT = re.compile(r'"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|[^",(]+|[,(]')


@dataclass(frozen=True)
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
class Attachment:
    filename: str
    content_type: str
    size: int


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
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def sender(self) -> Address | None:
        return self.from_[0] if self.from_ else None

    @property
    def recipients(self) -> tuple[Address, ...]:
        return self.to + self.cc

    @property
    def participants(self) -> tuple[Address, ...]:
        """Every distinct address in From, To, Cc and Reply-To, in that order."""
        seen: dict[str, Address] = {}
        for addr in self.from_ + self.to + self.cc + self.reply_to:
            seen.setdefault(addr.address, addr)
        return tuple(seen.values())


def clean(text: str) -> str:
    """Text that any database can store: undecodable bytes (lone surrogates) become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def normalize_address(raw: str) -> str | None:
    """Lowercase the domain, keep the local part, and refuse anything that is not a mailbox."""
    if clean(raw) != raw:
        return None
    local, at, domain = raw.strip().rpartition("@")
    if not at:
        return None
    try:
        domain = domain.encode("idna").decode("ascii").lower() if domain else ""
    except UnicodeError:
        return None
    if not _LOCAL_PART.match(local) or not _DOMAIN.match(domain):
        return None
    return f"{local}@{domain}"


class _BoundedPolicy(EmailPolicy):
    """policy.default, except that MIME headers reach the header registry trimmed and cached
    (a thousand parts of one message mostly share one Content-Type)."""

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if type(value) is str and name.lower() in _MIME_HEADERS:
            return _mime_header(name, value)
        return super().header_fetch_parse(name, value)


@lru_cache(maxsize=1024)
def _mime_header(name: str, value: str) -> Any:
    trimmed = _EMPTY_PARAMS.sub(";", value[:MAX_MIME_HEADER_CHARS])
    trimmed = ";".join(trimmed.split(";", MAX_MIME_PARAMS + 1)[: MAX_MIME_PARAMS + 1])
    return policy.default.header_fetch_parse(name, trimmed)


_POLICY = _BoundedPolicy()
# The registry makes a new header class on every call; the address header's is made once.
_ADDRESS_HEADER: Any = HeaderRegistry()["to"]
_PARSER = BytesParser(policy=_POLICY)
_HEADER_PARSER = BytesHeaderParser(policy=_POLICY)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw bytes; defects are recorded on the result, never raised."""
    return parse_message_and_mime(raw)[0]


def parse_message_and_mime(raw: bytes) -> tuple[ParsedMessage, EmailMessage]:
    """parse_message, and the MIME tree it read, for extraction (capture.content) without
    parsing the bytes twice."""
    defects: list[str] = []
    msg = _parse(raw, defects)
    defects.extend(type(d).__name__ for d in msg.defects[:20])
    headers = _headers(msg, defects)
    return ParsedMessage(
        digest=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        message_id=_message_id(_first(headers, "message-id")),
        subject=(_first(headers, "subject") or "")[:998],
        date=_date(_first(headers, "date")),
        from_=_addresses(msg, "from", defects),
        to=_addresses(msg, "to", defects),
        cc=_addresses(msg, "cc", defects),
        reply_to=_addresses(msg, "reply-to", defects),
        in_reply_to=_message_id(_first(headers, "in-reply-to")),
        references=tuple(re.findall(r"<[^<>\s]{1,250}>", _first(headers, "references") or ""))[
            :100
        ],
        headers=headers,
        text=_text(msg, defects),
        content_types=tuple(part.get_content_type() for part in _walk(msg)),
        attachments=_attachments(msg),
        defects=tuple(dict.fromkeys(defects)),
        raw=raw,
    ), msg


def parse_mime(raw: bytes) -> EmailMessage:
    """The MIME tree that parse_message reads, bounded the same way: for extraction
    (capture.content) from the same bytes."""
    return _parse(raw, [])


def _parse(raw: bytes, defects: list[str]) -> EmailMessage:
    """The MIME tree; for a message nested or split beyond reason, its headers alone."""
    if not _beyond(_BOUNDARY_PARAM, raw, MAX_MULTIPARTS) and not (
        _beyond(_DELIMITER_LINE, raw, MAX_DELIMITER_LINES) and _beyond(_BOUNDARY_PARAM, raw, 0)
    ):
        try:
            msg = _PARSER.parsebytes(raw)
            assert isinstance(msg, EmailMessage)
            return msg
        except RecursionError:
            pass
    defects.append("too-many-multiparts")
    headers_only = _HEADER_PARSER.parsebytes(raw)
    assert isinstance(headers_only, EmailMessage)
    headers_only.set_payload("")
    return headers_only


def _beyond(pattern: re.Pattern[bytes], raw: bytes, limit: int) -> bool:
    return sum(1 for _ in itertools.islice(pattern.finditer(raw), limit + 1)) > limit


def _first(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _headers(msg: Message, defects: list[str]) -> tuple[tuple[str, str], ...]:
    """Header values, unfolded and with RFC 2047 words decoded. Only address headers go
    through the (ten times slower) header registry, in _addresses."""
    pairs: list[tuple[str, str]] = []
    raw_items = msg.raw_items() if isinstance(msg, EmailMessage) else iter(msg.items())
    for key, value in itertools.islice(raw_items, 500):
        text = _decoded(str(value)[:4000], key, defects)
        pairs.append((clean(key.lower()[:100]), clean(" ".join(text.split()))))
    return tuple(pairs)


def _decoded(value: str, key: str, defects: list[str]) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeError, ValueError, HeaderParseError, CharsetError):
        defects.append(f"undecodable-header:{key.lower()[:40]}")
        return value


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = re.search(r"<[^<>\s]{1,250}>", value)
    return match.group(0) if match else value.strip()[:250] or None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _addresses(msg: Message, name: str, defects: list[str]) -> tuple[Address, ...]:
    result: dict[str, Address] = {}
    values = (
        [v for k, v in msg.raw_items() if k.lower() == name]
        if isinstance(msg, EmailMessage)
        else []
    )
    for value in values[:10]:
        for piece in _address_pieces(_utf8(str(value)), name, defects):
            for mailbox in _mailboxes(piece, name, defects):
                normalized = normalize_address(f"{mailbox.username}@{mailbox.domain}")
                if normalized is None:
                    defects.append(f"invalid-address-in-{name}")
                    continue
                name_as_written = clean(mailbox.display_name[:200])
                result.setdefault(normalized, Address(normalized, name_as_written))
                if len(result) >= MAX_ADDRESSES_PER_HEADER:
                    return tuple(result.values())
    return tuple(result.values())


def _utf8(value: str) -> str:
    """A header written in raw UTF-8 (RFC 6532) reaches us with its bytes escaped."""
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
        kept.append(piece)
    return kept[:MAX_ADDRESSES_PER_HEADER]


def _mailboxes(piece: str, name: str, defects: list[str]) -> tuple[HeaderAddress, ...]:
    found = _parsed_mailboxes(" ".join(piece.split()))
    if found is None:
        defects.append(f"unparsable-{name}")
        return ()
    return found


@lru_cache(maxsize=4096)  # correspondents recur; the registry costs ~0.1 ms a mailbox
def _parsed_mailboxes(piece: str) -> tuple[HeaderAddress, ...] | None:
    try:
        return tuple(_ADDRESS_HEADER("to", piece).addresses)
    except Exception:  # the header registry rejects some hostile forms outright
        return None


def _walk(msg: Message) -> list[Message]:
    return list(itertools.islice(msg.walk(), 200))


def _text(msg: Message, defects: list[str]) -> str:
    if not isinstance(msg, EmailMessage):
        return ""
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        defects.append("unreadable-body")
        return ""
    if body is None:
        return ""
    text = _decode(body, defects)
    if body.get_content_type() == "text/html":
        text = _TAGS.sub(" ", text)
    return clean(text[:MAX_TEXT_CHARS].replace("\r\n", "\n"))


def _decode(part: Message, defects: list[str]) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        return content if isinstance(content, str) else ""
    except (LookupError, UnicodeError, ValueError, AssertionError):
        defects.append("undecodable-body")
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _attachments(msg: Message) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    for part in _walk(msg):
        if part.is_multipart() or part.get_content_disposition() != "attachment":
            continue
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        filename = (part.get_filename() or "")[:255]
        found.append(Attachment(filename, part.get_content_type(), size))
    return tuple(found)
