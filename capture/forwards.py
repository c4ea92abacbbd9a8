"""Find the original sender, recipients, subject and date of an inline-forwarded message."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from email import policy as email_policy
from email.message import Message
from enum import IntEnum

from capture import forward_labels as labels
from capture.parse import ParsedMessage, normalize_address, parse_message, parse_mime

MAX_SCAN = 65_536  # characters of a body that are searched
MAX_VALUE = 1_000  # characters kept of one header value
MAX_PARTS = 200  # MIME parts looked at for an attached message
_LABEL_SPAN = labels.LONGEST_LABEL + 6  # a header line's label and colon sit within this
_BLOCK_LINES = 30  # lines one header block may span
_ATTRIBUTION_SPAN = 300  # longest "On ... wrote:" text, over up to three lines
_COLONS = (":", "\uff1a")  # and the fullwidth colon of Chinese, Japanese and Korean
_MARKER_STARTS = "-_=*—"
_INVISIBLE = (("\r\n", "\n"), ("\r", "\n"), ("\ufeff", ""), ("\u200b", ""), ("\xa0", " "))
_NEEDLES = (*_COLONS, "--", "__", "==", "\u2014\u2014")  # one of these is on every marker line
_DIGIT = re.compile(r"\d")
_QUOTE_MARK = re.compile(r"^[ \t]*> ?", re.MULTILINE)
_MAILTO = re.compile(r"[<\[(](?:mailto|smtp):([^<>\[\]()\s]{1,320})[>\])]", re.IGNORECASE)
_ON_BEHALF = re.compile(r"\bon\s+behalf\s+of\b", re.IGNORECASE)
_NOTES_DATE = re.compile(r"(?<!\s)\s+(?:on\s+)?\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}\b.*$", re.I)
_WROTE = re.compile(
    "|".join(  # whole words, except in scripts written without spaces
        re.escape(word) if ord(word[0]) >= 0x3000 else rf"(?<!\w){re.escape(word)}(?!\w)"
        for word in labels.WROTE_WORDS
    ),
    re.IGNORECASE,
)
_QUOTES = "\"'\u201e\u201d\u201c\u2018\u2019\u00ab\u00bb"  # straight, low-9, curly and angle quotes
_NAME_JUNK = f" \t*<>,;:\\{_QUOTES}"
_TOKEN_STOPS = frozenset(f" \t<>()[]`,;:*{_QUOTES}")
_OPENERS = {'"': '"', "'": "'", "”": "„“", "“": "“„", "»": "«"}  # closing quote: openings
_BLOCK_FIELDS = frozenset(("date", "to", "cc", "subject"))  # two make a bare From block


@dataclass(frozen=True)
class ForwardedAddress:
    address: str | None  # normalized: local part as written, domain lowercased
    name: str | None


@dataclass(frozen=True)
class ForwardedMessage:
    sender: ForwardedAddress
    to: tuple[ForwardedAddress, ...]
    cc: tuple[ForwardedAddress, ...]
    subject: str | None
    date: str | None  # as written
    body: str  # the forwarded message's own text (after its header block), may be ""


class _Kind(IntEnum):
    """How surely a marker introduces forwarded rather than quoted mail."""

    ATTRIBUTION = 1  # "On <date>, <name> wrote:": a reply, unless the subject says forward
    HEADER = 2  # "-----Original Message-----", Outlook's rule or a bare From/Sent/To block
    FORWARD = 3  # a separator that says forwarded


@dataclass
class _Block:
    fields: dict[str, str]
    end: int  # index of the first line after the block


@dataclass
class _Lines:
    raw: list[str]
    content: list[str]  # without quote markers (">") and surrounding whitespace
    parsed: dict[int, tuple[str, str] | None] = field(default_factory=dict)

    def header(self, index: int) -> tuple[str, str] | None:
        """(field, value) of a header line, parsed once."""
        if index not in self.parsed:
            self.parsed[index] = _header(self.content[index])
        return self.parsed[index]

    def depth(self, index: int) -> int:
        line = self.raw[index]
        return line.count(">", 0, len(line) - len(line.lstrip("> \t")))


def find_forwarded(text: str, *, subject: str | None = None) -> ForwardedMessage | None:
    """The outermost inline-forwarded message in a plain-text body, or None.

    The first marker from the top decides. Without a subject, "On ... wrote:" is a reply and
    Outlook header blocks are forwards. The outer subject, where known, refines this: a forward
    prefix (Fwd:, WG:, TR: ...) also accepts Outlook for Mac's "On ... wrote:" forwards, and a
    reply prefix (Re:, AW: ...) accepts only separators that say forwarded.
    """
    text = text[:MAX_SCAN]
    for character, replacement in _INVISIBLE:  # (str.translate is slow on non-Latin text)
        if character in text:
            text = text.replace(character, replacement)
    raw = text.split("\n")
    lines = _Lines(raw, [line.lstrip("> \t").rstrip() for line in raw])
    prefix = _subject_prefix(subject or "")[0]
    needed = _Kind.ATTRIBUTION if prefix in labels.FORWARD_PREFIXES else _Kind.HEADER
    needed = _Kind.FORWARD if prefix in labels.REPLY_PREFIXES else needed
    for index in _candidates(text, lines):
        found = _marker_at(lines, index, subject)
        if found is not None:
            return found[1] if found[0] >= needed else None
    return None


def _candidates(text: str, lines: _Lines) -> list[int]:
    """Lines that may hold a marker, found with str.find so that prose costs next to nothing."""
    found: list[tuple[int, bool]] = []  # (position, whether found by a colon)
    for needle in _NEEDLES:
        position = text.find(needle)
        while position >= 0:
            found.append((position, needle in _COLONS))
            line_end = text.find("\n", position)
            position = text.find(needle, line_end) if line_end >= 0 else -1
    indexes: list[int] = []
    index, previous = 0, 0
    for position, by_colon in sorted(found):
        index += text.count("\n", previous, position)
        previous = position
        content = lines.content[index]
        if by_colon and not content.endswith(_COLONS) and lines.header(index) is None:
            continue  # a colon in running text, or after a word that is no label
        if not indexes or indexes[-1] != index:
            indexes.append(index)
    return indexes


def _subject_prefix(subject: str) -> tuple[str, str]:
    """A subject's reply or forward prefix, casefolded ("" if none), and the rest."""
    rest = subject.strip()
    if rest.startswith("[") and 0 < rest.find("]") < 40:  # "[EXT] FW: ..."
        rest = rest[rest.find("]") + 1 :].lstrip()
    colon = min((p for p in (rest.find(c, 0, 16) for c in _COLONS) if p > 0), default=-1)
    prefix = _fold(rest[:colon]).split("[")[0].split("(")[0].strip(" .")  # "Re[2]", "Redir."
    if colon > 0 and (prefix in labels.FORWARD_PREFIXES or prefix in labels.REPLY_PREFIXES):
        return prefix, rest[colon + 1 :].strip()
    return "", rest


def _marker_at(
    lines: _Lines, index: int, subject: str | None
) -> tuple[_Kind, ForwardedMessage] | None:
    content = lines.content[index]
    separator = _separator(content)
    if separator is not None:
        kind, rest = separator
        message = _after_separator(lines, index, kind, rest)
        if kind in ("forward", "notes"):  # a forward, even if its header block is unreadable
            nobody = ForwardedMessage(ForwardedAddress(None, None), (), (), None, None, "")
            return _Kind.FORWARD, message or replace(nobody, body=_body(lines, index + 1, 0))
        return None if message is None else (_Kind.HEADER, message)
    header = lines.header(index)
    if header is not None:
        block = _block(lines, index) if header[0] == "from" else None
        if block is None or len(_BLOCK_FIELDS & block.fields.keys()) < 2:
            return None
        return _Kind.HEADER, _message(block, lines, index)
    return _attribution(lines, index, subject)


def _separator(content: str) -> tuple[str, str] | None:
    """("forward" | "original" | "rule" | "notes", text after it) for a separator line."""
    if not content or (content[0] not in _MARKER_STARTS and not content.endswith(_COLONS)):
        return None
    if len(content) >= 10 and not content.strip("_"):
        return "rule", ""
    inner = content.lstrip("-=*— ")
    cut = inner.find("--")
    phrase, rest = (inner, "") if cut < 0 else (inner[:cut], inner[cut:].lstrip("-=*— "))
    phrase = _fold(" ".join(phrase.rstrip(" ").rstrip("".join(_COLONS)).split()))
    if phrase in labels.SEPARATORS:
        return labels.SEPARATORS[phrase], rest
    return ("notes", "") if phrase.startswith(labels.FORWARDED_BY) else None


def _after_separator(lines: _Lines, index: int, kind: str, rest: str) -> ForwardedMessage | None:
    """The forwarded message under a separator line, or on it (Yahoo), when it has a From."""
    if rest:
        inline = _Block(_inline_fields(rest[: MAX_VALUE * 2]), index + 1)
        return _message(inline, lines, index) if "from" in inline.fields else None
    after = range(index + 1, min(index + 8, len(lines.content)))
    texts = (i for i in after if lines.content[i] and not lines.content[i].endswith("---"))
    start = next(texts, None)  # past blank lines and a wrapped Notes separator's "AM -----"
    if start is None:
        return None
    block: _Block | None = _block(lines, start)
    if kind == "notes" and (block is None or "from" not in block.fields):
        block = _notes_block(lines, start)
    return None if block is None or "from" not in block.fields else _message(block, lines, start)


def _fold(text: str) -> str:
    """Casefolded, without the dot that casefolding leaves on a Turkish capital İ."""
    return text.casefold().replace("\u0307", "")


def _header(content: str) -> tuple[str, str] | None:
    """(field, value) when the line opens with a known label and a colon."""
    colon, wide = content.find(":", 0, _LABEL_SPAN), content.find("\uff1a", 0, _LABEL_SPAN)
    colon = wide if wide > 0 and not 0 < colon < wide else colon
    if colon <= 0 or content.count(" ", 0, colon) > 3:
        return None
    known = labels.LABELS.get(_fold(" ".join(content[:colon].strip("* \t").split())))
    return None if known is None else (known, content[colon + 1 :][:MAX_VALUE].strip("* \t"))


def _block(lines: _Lines, start: int) -> _Block | None:
    """Header lines from start; single blank lines may part them (Lotus Notes)."""
    block = _Block({}, start)
    index, limit, last = start, min(start + _BLOCK_LINES, len(lines.content)), ""
    while index < limit and index - block.end < 3:
        content, header = lines.content[index], lines.header(index)
        if header is None:
            if content and index == block.end and last in ("to", "cc", "bcc") and "@" in content:
                block.fields[last] = f"{block.fields[last]} {content}"[:MAX_VALUE]  # wrapped
                block.end = index + 1
            elif content:
                break
            index += 1
            continue
        name, value = header
        if name in block.fields and name != "other":
            break
        if not value and _lone_value(lines, index + 1):  # HTML tables as text
            index += 1
            value = lines.content[index][:MAX_VALUE]
        block.fields[name], last = value, name
        index += 1
        block.end = index
    return block if block.fields else None


def _lone_value(lines: _Lines, index: int) -> bool:
    """Whether a line is a value alone under its label, then a label or a blank line."""
    if index >= len(lines.content) or not lines.content[index] or lines.header(index):
        return False
    after = index + 1
    return after == len(lines.content) or not lines.content[after] or bool(lines.header(after))


def _notes_block(lines: _Lines, start: int) -> _Block | None:
    """Lotus Notes: the sender's name (and date) on lines of their own above To/cc/Subject."""
    preamble: list[str] = []
    for index in range(start, min(start + 8, len(lines.content))):
        if lines.header(index) is not None:
            block = _block(lines, index)
            if block is not None and "from" not in block.fields and preamble:
                block.fields["from"] = preamble[0]
            return block
        if lines.content[index]:
            preamble.append(lines.content[index])
    return None


def _inline_fields(text: str) -> dict[str, str]:
    """Yahoo's one-line block: "From: A <a@x>To: B <b@y>Sent: ...Subject: ..."."""
    starts: list[tuple[int, int, str]] = []  # label start, value start, field
    position = text.find(": ")
    for _ in range(32):
        if position <= 0:
            break
        end = position - 1 if text[position - 1].isspace() else position
        for size in range(min(labels.LONGEST_LABEL, end), 0, -1):
            known = labels.LABELS.get(_fold(text[end - size : end]))
            if known is not None:
                starts.append((end - size, position + 2, known))
                break
        position = text.find(": ", position + 2)
    fields: dict[str, str] = {}
    for number, (_, value_start, name) in enumerate(starts):
        value_end = starts[number + 1][0] if number + 1 < len(starts) else len(text)
        fields.setdefault(name, text[value_start:value_end][:MAX_VALUE].strip())
    return fields


def _message(block: _Block, lines: _Lines, start: int) -> ForwardedMessage:
    return ForwardedMessage(
        sender=_sender(block.fields.get("from", "")),
        to=_mailboxes(block.fields.get("to", "")),
        cc=_mailboxes(block.fields.get("cc", "")),
        subject=block.fields.get("subject") or None,
        date=block.fields.get("date") or None,
        body=_body(lines, block.end, lines.depth(start)),
    )


def _body(lines: _Lines, start: int, depth: int) -> str:
    """The text from line start on, less the quote markers of the forwarded block."""
    body = "\n".join(lines.raw[start:])
    for _ in range(depth):
        body = _QUOTE_MARK.sub("", body)
    return body.strip()


def _attribution(
    lines: _Lines, index: int, subject: str | None
) -> tuple[_Kind, ForwardedMessage] | None:
    """An "On <date>, <name> <address> wrote:" line (or Gmail's "<date> <name> <address>:")."""
    content = lines.content[index]
    if len(content) > _ATTRIBUTION_SPAN or not content.endswith(_COLONS):
        return None
    folded = _fold(content)
    says_wrote = any(word in folded for word in labels.WROTE_WORDS) and _WROTE.search(content)
    if not says_wrote and not (content[:-1].endswith(">") and "@" in content):
        return None
    first = index
    while first > max(0, index - 2) and lines.content[first - 1]:
        first -= 1  # "On <date>, Jane Roe\n<jane@example.com>\nwrote:"
    joined = " ".join(lines.content[first : index + 1])[-_ATTRIBUTION_SPAN:]
    if not _DIGIT.search(joined):
        return None
    subject_rest = _subject_prefix(subject or "")[1] or None
    body = _body(lines, index + 1, lines.depth(index))
    sender = _attribution_sender(joined)
    return _Kind.ATTRIBUTION, ForwardedMessage(sender, (), (), subject_rest, None, body)


def _attribution_sender(text: str) -> ForwardedAddress:
    span = _address_span(text)
    if span is None:
        wrote = _WROTE.search(text)
        return ForwardedAddress(None, _name_before(text[: wrote.start()] if wrote else text))
    start, end = span
    return ForwardedAddress(normalize_address(text[start:end]), _name_before(text[:start]))


def _name_before(text: str) -> str | None:
    """A quoted name ending the text, or its last capitalized words ("... PM, John Doe")."""
    text = text.rstrip(" \t<([")
    if text and text[-1] in _OPENERS:
        opening = max(text.rfind(mark, 0, len(text) - 1) for mark in _OPENERS[text[-1]])
        return _clean_name(text[opening + 1 : -1]) if opening >= 0 else None
    words: list[str] = []
    for word in reversed(text.split()[-4:]):
        if not word[0].isupper() or word.endswith((",", ":", ";")) or _DIGIT.search(word):
            break
        words.insert(0, word)
    return _clean_name(" ".join(words))


def _sender(value: str) -> ForwardedAddress:
    """The one mailbox of a From value; a comma may belong to the name ("Doe, John")."""
    if "<" not in value and _DIGIT.search(value):
        value = _NOTES_DATE.sub("", value)  # Lotus Notes: "Jane Roe on 05/09/2001 04:33 PM"
    value = _ON_BEHALF.split(value, maxsplit=1)[0]  # "Jane Roe <j@x> on behalf of Acme"
    return _mailbox(_unmailto(value)) or ForwardedAddress(None, None)


def _mailboxes(value: str) -> tuple[ForwardedAddress, ...]:
    """Split at ";", and at "," once the part holds an address, outside quotes and <>."""
    value, parts = _unmailto(value), []
    start, quoted, angled = 0, False, False
    for position, character in enumerate(value):
        quoted ^= character == '"'
        angled = character == "<" or (angled and character != ">")
        ends = character == ";" or (character == "," and "@" in value[start:position])
        if ends and not (quoted or angled):
            parts.append(value[start:position])
            start = position + 1
    found = (_mailbox(part) for part in [*parts, value[start:]])
    return tuple(mailbox for mailbox in found if mailbox is not None)


def _unmailto(value: str) -> str:
    """Without bold stars; "<mailto:a>", "[mailto:a]", "(mailto:a)", "[SMTP:a]" made "<a>"."""
    value = value.replace("*", "")
    folded = value.casefold()
    return _MAILTO.sub(r"<\1>", value) if "mailto:" in folded or "smtp:" in folded else value


def _mailbox(text: str) -> ForwardedAddress | None:
    """One mailbox: "Name <a@b>", "a@b", "Name (a@b)", "a@b (Name)", or a name alone."""
    text = text.strip(" \t,;")
    parts = _mailbox_parts(text)
    if parts is None:
        name = _clean_name(text.split("@")[0])  # Lotus Notes: "Jane Roe @ ACME"
        return None if name is None else ForwardedAddress(None, name)
    name, written = parts
    address = normalize_address(written)
    if address is None:  # a Lotus Notes name "Jane Roe/Sales/Acme@Acme" or "Jane Roe@ACME"
        notes = name if "<" in text else text
        return ForwardedAddress(None, _clean_name(notes.split("/")[0].split("@")[0]))
    cleaned = _clean_name(name)
    same = cleaned is not None and cleaned.casefold() == written.casefold()
    return ForwardedAddress(address, None if same else cleaned)


def _mailbox_parts(text: str) -> tuple[str, str] | None:
    """(name text, address as written): the first address in <> or else the first a@b."""
    opening = text.find("<")
    while opening >= 0:
        closing = text.find(">", opening)
        if closing < 0:
            break
        inner = text[opening + 1 : closing].rsplit("<", 1)[-1]  # "<a@b<mailto:a@b>>"
        if "@" in inner:
            return text[:opening], inner.strip()
        opening = text.find("<", opening + 1)
    span = _address_span(text)
    if span is None:
        return None
    start, end = span
    before = text[:start]
    return before if before.strip(_NAME_JUNK) else text[end:], text[start:end]


def _address_span(text: str) -> tuple[int, int] | None:
    """Where the first address-like token (something@something) sits in text."""
    at = text.find("@")
    while at >= 0:
        start, end = at, at + 1
        while start > 0 and text[start - 1] not in _TOKEN_STOPS:
            start -= 1
        while end < len(text) and text[end] not in _TOKEN_STOPS:
            end += 1
        if start < at < end - 1:
            return start, end
        at = text.find("@", at + 1)
    return None


def _clean_name(name: str) -> str | None:
    """The name without quotes, stray brackets and spacing: "'Doe, John' (" is "Doe, John"."""
    name = " ".join(name.replace('\\"', '"').split()).strip(_NAME_JUNK)
    if name[:1] + name[-1:] in ("()", "[]"):
        name = name[1:-1]
    return name.rstrip("([ ").lstrip(")] ").strip(_NAME_JUNK) or None


def find_attached(raw: bytes) -> ParsedMessage | None:
    """The first message attached whole (message/rfc822), as clients forward "as attachment";
    None if there is none. Only the outermost level is opened, in the tree parse_message
    reads (bounded alike); one nested too deep to write out again stands for nothing."""
    for part in itertools.islice(parse_mime(raw).walk(), MAX_PARTS):
        if part.get_content_type() != "message/rfc822":
            continue
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            try:  # the generator recurses once per level, as the parser does
                return parse_message(inner[0].as_bytes(policy=email_policy.compat32))
            except RecursionError:
                return None
    return None
