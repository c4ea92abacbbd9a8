"""Parse, signatures: name, title, company and phone numbers from the newest signature block."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers

from capture import forward_labels as labels
from capture import signature_words as words

MAX_SCAN = 65_536  # characters searched for the start of quoted or forwarded mail
MAX_SCAN_LINES = 1_500  # and lines
MAX_TAIL = 6_000  # characters before that start in which the signature is looked for
MAX_LINES = 30  # lines of that tail looked at
MAX_LINE = 200  # characters of one line looked at
MAX_BLOCK = 10  # lines of one signature block
MAX_PHONES = 4


def _alternatives(words: tuple[str, ...] | frozenset[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# Where the newest message ends: a quote, a reply attribution, a forward or original-message
# separator, an Outlook rule, a Lotus Notes "date time" or "Forwarded by" line, or a header
# block ("From:" followed by another header label within three lines). Lines are tried only
# when a cheap test says they might be one of these (see _is_quote_start).
_SEPARATOR = re.compile(
    rf"^[-_=*\u2014]{{2,}}+[ \t]*+(?:{_alternatives((*labels.SEPARATORS, *labels.FORWARDED_BY))})"
    r"|^_{10,}$",
    re.IGNORECASE,
)
_FORWARDED_BY = re.compile(rf"(?:{_alternatives(labels.FORWARDED_BY)})[^\n]{{0,120}}\d:\d\d", re.I)
_WROTE_WORDS = (*labels.WROTE_WORDS, "said")  # "In message <…>, Jane Roe said:"
_WROTE = re.compile(rf"(?:^|\s)(?:{_alternatives(_WROTE_WORDS)})[ \t]*[:\uff1a]?$", re.I)
# "Am 23.11.2026 schrieb Jane Roe <jane@acme.de>:": the verb need not end the line
_WROTE_WITHIN = re.compile(rf"(?:^|\s)(?:{_alternatives(_WROTE_WORDS)})(?:\s|$)", re.I)
_WROTE_ENDINGS = tuple(w.lower() for w in _WROTE_WORDS)
# Lotus Notes: "Jane Roe <jane@acme.com> on 07/17/2001 03:23:19 PM", "Jane Roe  05/23/2001 03:46 PM"
_LOTUS_DATE = re.compile(r"(?:^|\s)\d\d/\d\d/\d{2,4}[ \t]+\d\d?:\d\d(?::\d\d)?[ \t]*[AP]M$")
_FROM_LABEL = re.compile(
    r"^\*{0,2}(?:"
    + _alternatives(tuple(k for k, v in labels.LABELS.items() if v == "from"))
    + r")\*{0,2}[ \t]*[:\uff1a]",
    re.IGNORECASE,
)
_HEADER_LABEL = re.compile(
    r"^[ \t]*\*{0,2}(?:" + _alternatives(tuple(labels.LABELS)) + r")\*{0,2}[ \t]*[:\uff1a]", re.I
)
_DELIMITER = re.compile(r"^(?:--|\u2014\u2014?)$")  # "-- " once trailing space is stripped
_CLOSING = re.compile(
    r"^[ \t]*(?:" + "|".join(words.CLOSINGS) + r")(?:[ \t]*[.!:]+)?"
    r"(?:[ \t]*[,\-\u2014][ \t]*(?P<name>[^\W\d_][\w .'\-]{0,40}?)?)?[ \t.!]*$",
    re.IGNORECASE,
)
_ORGANISATION = re.compile(words.ORGANISATION, re.IGNORECASE)
_TITLE = re.compile(words.TITLE, re.IGNORECASE)
_COMPANY = re.compile(words.COMPANY, re.IGNORECASE)
_NAME_WORD = re.compile(r"^(?:[^\W\d_][\w'\-]*\.?|de|da|van|von|der|den|di|du|la|le|del)$")
_CONTACT_NOISE = re.compile(
    r"@|https?://|www\.|\bsent from\b|\bsent via\b|\S \(?at\)? \S+\.[a-z]{2,}\b", re.IGNORECASE
)
_ANGLED = re.compile(r"<[^<>]{0,200}>")
_MOBILE = re.compile(r"\b(?:mobile|mob|cell|cellular|handy|mobil|portable|celular|m)\b", re.I)
_FAX = re.compile(r"\b(?:fax|f|telefax)\b", re.IGNORECASE)
_DIGITS = re.compile(r"\d")
_E164 = phonenumbers.PhoneNumberFormat.E164
_MATCHER_TRIES = 8  # candidate numbers phonenumbers tries on one line: bounded work
_NAME_SPLIT = re.compile(r"\s*(?:\||,|\s-\s|\u2013|\u2014)\s*")
_COLUMNS = re.compile(r"\s{3,}|\t+|\s{2,}\|\s*")
_RULE = re.compile(r"^[-_=*]{10,}$")
_SPLIT_TITLE = re.compile(r"\s*(?:\||,|\s-\s|\u2013|\u2014|\bat\b|@)\s*")


@dataclass(frozen=True)
class Found:
    """A value and the line of the message text (0-based) it was read from."""

    value: str
    line: int


class PhoneKind(StrEnum):
    PHONE = "phone"
    MOBILE = "mobile"
    FAX = "fax"


@dataclass(frozen=True)
class Phone:
    number: str  # E.164: +17138535854
    kind: PhoneKind  # from the label written before it
    line: int


@dataclass(frozen=True)
class Signature:
    """The newest signature block of a message, each part with the line it came from."""

    first_line: int
    last_line: int
    name: Found | None
    title: Found | None
    company: Found | None
    phones: tuple[Phone, ...]
    matches_sender: bool  # the name shares a word with the sender's: it is theirs, not quoted


def extract_signature(
    text: str,
    *,
    sender_name: str = "",
    company_hint: str = "",
    region: str | None = None,
) -> Signature | None:
    """The signature of the newest message in `text` (before any quoted or forwarded mail):
    the block after a "-- " line, else after a closing ("Regards,", "Mit freundlichen
    Grüßen"…), else a trailing card: a name, then lines with a phone number. `sender_name`
    (the From display name) and `company_hint` (people.Company.name) help recognise lines;
    `region` ("US", "DE"…) reads phone numbers written without a country code."""
    lines, offset = _tail(text)
    block = _block(lines)
    if block is None:
        return None
    start, stop, inline_name = block
    parts = _read_block(lines, start, stop, inline_name, sender_name, company_hint, region)
    name, title, company, phones = parts
    if name is None and title is None and company is None and not phones:
        return None
    return Signature(
        first_line=offset + start - (1 if inline_name else 0),
        last_line=offset + stop - 1,
        name=_moved(name, offset),
        title=_moved(title, offset),
        company=_moved(company, offset),
        phones=tuple(Phone(p.number, p.kind, p.line + offset) for p in phones),
        matches_sender=bool(name and _words(name.value) & _words(sender_name)),
    )


def _moved(found: Found | None, offset: int) -> Found | None:
    return Found(found.value, found.line + offset) if found else None


def _tail(text: str) -> tuple[list[str], int]:
    """The last lines of the newest message, each capped, and the line number of the first."""
    end = _quote_start(text)
    begin = max(0, end - MAX_TAIL)
    if begin:
        begin = text.find("\n", begin, end) + 1 or end
    lines = [line[:MAX_LINE].rstrip() for line in text[begin:end].split("\n")]
    skipped = max(0, len(lines) - MAX_LINES)
    return lines[skipped:], text.count("\n", 0, begin) + skipped


def _quote_start(text: str) -> int:
    """Where quoted or forwarded mail starts in `text`, or where the text ends. Only the first
    MAX_SCAN characters and MAX_SCAN_LINES lines are searched: past them, that is the end."""
    head = text[:MAX_SCAN]
    position = 0
    lines = head.split("\n", MAX_SCAN_LINES)[:MAX_SCAN_LINES]
    for index, line in enumerate(lines):
        if _is_quote_start(line[:MAX_LINE].strip(), lines, index):
            return position
        position += len(line) + 1
    return len(text) if position >= len(text) else min(position, len(head))


def _is_quote_start(line: str, lines: list[str], index: int) -> bool:
    if not line:
        return False
    if line[0] == ">":
        return True
    if line[:2] in ("--", "__", "==", "**", "\u2014\u2014") and _SEPARATOR.match(line):
        return True
    if line.lower().rstrip(":\uff1a ").endswith(_WROTE_ENDINGS) and _WROTE.search(line[-60:]):
        return True
    if line[-1] in ":\uff1a" and _WROTE_WITHIN.search(line):
        return True
    if ":" not in line and "\uff1a" not in line:
        return False
    if _LOTUS_DATE.search(line[-40:]) or _FORWARDED_BY.search(line):
        return True
    if _FROM_LABEL.match(line):  # a header block: another label within three lines
        return any(_HEADER_LABEL.match(following) for following in lines[index + 1 : index + 4])
    return False


def _block(lines: list[str]) -> tuple[int, int, str] | None:
    """Start and stop of the signature block in `lines`, and a name written on the closing
    line ("Thanks, Vince")."""
    stop = len(lines)
    while stop and not lines[stop - 1].strip():
        stop -= 1
    if not stop:
        return None
    for index in range(stop - 1, max(-1, stop - 1 - MAX_BLOCK - 2), -1):
        if _DELIMITER.match(lines[index].strip()):
            return index + 1, min(stop, index + 1 + MAX_BLOCK), ""
    for index in range(stop - 1, max(-1, stop - 1 - MAX_BLOCK), -1):
        closing = _CLOSING.match(lines[index]) if len(lines[index]) <= 60 else None
        inline = (closing.group("name") or "").strip(" .") if closing else ""
        if closing and (not inline or _is_name(inline, frozenset(), single=True)):
            return index + 1, min(stop, index + 1 + MAX_BLOCK), inline
    return _trailing_card(lines, stop)


def _trailing_card(lines: list[str], stop: int) -> tuple[int, int, str] | None:
    """Without a delimiter or closing: a last paragraph of a few short lines that starts with
    a name and holds a phone number, like a business card."""
    start = stop
    while start and lines[start - 1].strip() and stop - start < 6 and len(lines[start - 1]) <= 60:
        start -= 1
    if start == stop or (start and lines[start - 1].strip()):
        return None  # the paragraph goes on above: prose, not a card
    first = lines[start].strip()
    if _is_name(_NAME_SPLIT.split(first, maxsplit=1)[0], frozenset()) and any(
        _has_phone_digits(line) for line in lines[start + 1 : stop]
    ):
        return start, stop, ""
    return None


@dataclass
class _Reading:
    """What has been read from a block so far (one block, one call: never shared)."""

    name: Found | None = None
    title: Found | None = None
    company: Found | None = None
    phones: tuple[Phone, ...] = ()


def _read_block(
    lines: list[str],
    start: int,
    stop: int,
    inline_name: str,
    sender_name: str,
    company_hint: str,
    region: str | None,
) -> tuple[Found | None, Found | None, Found | None, tuple[Phone, ...]]:
    read = _Reading(name=Found(inline_name, start - 1) if inline_name else None)
    sender_words = _words(sender_name)
    blank = 0
    for index in range(start, stop):
        line = lines[index].strip(" \t*|")
        blank = 0 if line else blank + 1
        if _RULE.match(line) or (blank >= 2 and (read.name or read.phones)):
            break  # a list footer or another paragraph: the block is over
        for cell in _COLUMNS.split(line)[:4]:  # cards laid out in two columns
            if len(cell) > 100:
                return read.name, read.title, read.company, read.phones  # prose: over
            if cell.strip(" \t*|"):
                _read_line(read, cell.strip(" \t*|"), index, sender_words, company_hint, region)
    return read.name, read.title, read.company, read.phones


def _read_line(
    read: _Reading,
    line: str,
    index: int,
    sender_words: frozenset[str],
    company_hint: str,
    region: str | None,
) -> None:
    if _has_phone_digits(line):
        read.phones = (*read.phones, *_phones(line, index, region))[:MAX_PHONES]
        return
    line = _ANGLED.sub("", line).strip()  # "Jane Roe <jane@acme.com>": the name stays
    if not line or _CONTACT_NOISE.search(line):
        return
    name, rest = _name_and_rest(line, index, sender_words)
    # A fuller name than the one read ("Thanks,\nJane", then the card's "Jane Doe | ...")
    # is the name, and never read as a title or company.
    known = _words(read.name.value) if read.name else frozenset()
    if read.name is None or (name is not None and known and known <= _words(name.value)):
        read.name = name  # none yet: a line before the name is not read further
        if name is None or not rest:
            return
    else:
        rest = line
    read.title, read.company = _title_company(rest, index, read.title, read.company, company_hint)
    titled = read.title is not None and read.title.line == index
    if read.company is None and read.name is not None and not titled and _is_organisation(rest):
        read.company = Found(rest.strip(" ,.;"), index)


def _is_organisation(line: str) -> bool:
    words = line.split()
    return (
        bool(_ORGANISATION.search(line))
        and 1 <= len(words) <= 7
        and not _DIGITS.search(line)
        and sum(1 for w in words if w[0].isupper()) >= len(words) - 2
    )


def _title_company(
    line: str, index: int, title: Found | None, company: Found | None, hint: str
) -> tuple[Found | None, Found | None]:
    """'Director, Acme Corp' gives both; 'Acme Corp' a company; 'Sales Director' a title;
    'Chairman, President & CEO' one title; on a title line, a capitalized rest is a company."""
    if not line:
        return title, company
    titled = bool(_TITLE.search(line))
    roles: list[str] = []
    for piece in _SPLIT_TITLE.split(line)[:4] if titled else [line]:
        piece = piece.strip(" ,;")
        if not piece or (_DIGITS.search(piece) and not _COMPANY.search(piece)):
            continue
        if _TITLE.search(piece) and not _COMPANY.search(piece) and len(piece) <= 70:
            roles.append(piece)
        elif company is None and (_is_company(piece, hint) or (titled and piece[0].isupper())):
            company = Found(piece[:80], index)
    if title is None and roles:
        title = Found(", ".join(roles), index)
    return title, company


def _is_company(text: str, hint: str) -> bool:
    if _COMPANY.search(text):
        return _named(text)
    hinted = bool(hint) and len(hint) >= 3 and hint.lower() in text.lower()
    return hinted and text[0].isupper() and len(text) <= 60


def _named(text: str) -> bool:
    """Whether text is written as a name is, not as a sentence (a disclaimer's "... Acme
    Group accepts no liability ...", "... the company ..."): a few words, most capitalized."""
    words = text.split()
    return len(words) <= 8 and sum(1 for word in words if word[0].islower()) <= 3


def _is_name(line: str, sender_words: frozenset[str], *, single: bool = False) -> bool:
    """A person's name: one to four words that could be names, two capitalized (or one, when
    `single`, or any that is part of the sender's name), no title, company or closing."""
    if len(line) > 40 or _DIGITS.search(line) or _CLOSING.match(line) or _TITLE.search(line):
        return False
    if _ORGANISATION.search(line):
        return False
    words = line.replace(",", " ").split()
    if not 1 <= len(words) <= 4 or not all(_NAME_WORD.match(w) for w in words):
        return False
    if sender_words & {w.lower().strip(".") for w in words}:
        return True
    capitalized = sum(1 for w in words if w[0].isupper())
    wanted = 1 if single else 2
    return words[0][0].isupper() and capitalized >= wanted and not _COMPANY.search(line)


def _name_and_rest(line: str, index: int, sender_words: frozenset[str]) -> tuple[Found | None, str]:
    """'Jane Roe | VP Marketing' -> the name, and the rest to read as title or company."""
    if _is_name(line, sender_words):
        return Found(line.rstrip(".,"), index), ""
    pieces = _NAME_SPLIT.split(line, maxsplit=1)
    if len(pieces) == 2 and _is_name(pieces[0], sender_words):
        return Found(pieces[0].rstrip(".,"), index), pieces[1]
    return None, ""


def _words(name: str) -> frozenset[str]:
    return frozenset(w.lower() for w in re.split(r"[\s,.\"'()]+", name) if len(w) >= 2)


def _has_phone_digits(line: str) -> bool:
    return 7 <= len(_DIGITS.findall(line)) <= 60  # more is a table of figures, not a card


def _phones(line: str, index: int, region: str | None) -> list[Phone]:
    return [Phone(number, kind, index) for number, kind in _numbers(line, _region(region))]


@lru_cache(maxsize=4096)  # phonenumbers takes ~0.1 ms a line; a sender's signature repeats
def _numbers(line: str, region: str | None) -> tuple[tuple[str, PhoneKind], ...]:
    found = []
    label_start = 0
    for match in phonenumbers.PhoneNumberMatcher(line, region, max_tries=_MATCHER_TRIES):
        label = line[label_start : match.start].lower()  # the words since the last number
        kind = (
            PhoneKind.MOBILE
            if _MOBILE.search(label)
            else PhoneKind.FAX
            if _FAX.search(label)
            else PhoneKind.PHONE
        )
        found.append((phonenumbers.format_number(match.number, _E164), kind))
        label_start = match.end
    return tuple(found)


@lru_cache(maxsize=64)
def _region(region: str | None) -> str | None:
    if region is None:
        return None
    code = region.upper()
    if code == "UK":
        code = "GB"
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


def region_for_domain(domain: str) -> str | None:
    """A phone region from a country-code domain (acme.de -> DE), for numbers written
    without a country code; None for .com and the like."""
    tld = domain.rpartition(".")[2].upper()
    return _region(tld) if len(tld) == 2 else None
