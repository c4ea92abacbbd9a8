"""Parse, content: the readable text of a message and the list of its attachments."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from enum import StrEnum
from functools import lru_cache

from charset_normalizer import from_bytes
from selectolax.lexbor import LexborHTMLParser

MAX_TEXT_CHARS = 1_000_000
MAX_PARTS = 200  # MIME parts looked at: a message with more is hostile or broken
MAX_DEPTH = 20  # multipart nesting followed
MAX_BODY_BYTES = 4_000_000  # of one body part, decoded
MAX_SNIFF_BYTES = 4_096  # what charset-normalizer reads to guess a charset (16 KB: ~10 ms)
# selectolax (lexbor) over html2text: 0.17 ms against 4.9 ms per HTML body on the 611 HTML
# bodies of the SpamAssassin corpus (7.8 KB on average), and the text is as good for reading.
# Where lines break: where a block starts or ends, and at a <br>. A block's tag breaks the
# line it is on if that holds something a reader sees: a line of collapsible blanks alone is
# dropped, so that blocks in blocks break it once. A <br> ends its line even if empty
# (marked "\v" at its end): two leave a blank line, as a reader sees them.
_BLOCK = re.compile(
    r"<(?=/?(?:p|div|li|ul|ol|dl|dt|dd|tr|table|h[1-6]|blockquote|pre|address|hr|center"
    r"|section|article|header|footer|nav|aside|main|figure|figcaption|form|fieldset|caption)"
    r"[\s/>])",
    re.IGNORECASE,
)
_BREAK = re.compile(r"<(?=/?br[\s/>])", re.IGNORECASE)
_CELL_END = re.compile(r"</t[dh]\s*>", re.IGNORECASE)
# How deep an HTML body may nest before it is read as no text. The parser walks the open
# elements for each block that starts (for a <p> to close), so that tags nested a few thousand
# deep cost it seconds and a 256 KB body half a minute; mail nests tens deep.
MAX_HTML_DEPTH = 512
# A start or end tag, but not of an element that holds nothing, or that the next of its kind
# closes: those never nest deeper.
_NESTING_TAG = re.compile(
    r"<(/?)(?!(?:area|base|br|col|embed|hr|img|input|link|meta|param|source|track|wbr|p|li|dt"
    r"|dd|tr|td|th|thead|tbody|tfoot|colgroup|caption|option|optgroup|rb|rt|rtc|rp|html|head"
    r"|body)[\s/>])[A-Za-z]",
    re.IGNORECASE,
)
_SPACES = re.compile(r"[ \f\v\u00a0\u200b]+")  # tabs stay: they separate table cells
_BLANK_RUNS = re.compile(r"\n{3,}")
# Labels under which mail clients write a larger charset: GBK as gb2312, Microsoft's Korean
# as euc-kr (or ks_c_5601-1987), Windows' Japanese as shift_jis. Read as the larger one, as
# browsers read them (WHATWG Encoding Standard): the same text where the label is right,
# and the rest read rather than refused.
SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "euc_kr": "cp949", "shift_jis": "cp932"}
# Labels mail clients write that Python knows by another name (the WHATWG Encoding Standard
# lists them): Thai Outlook's windows-874, Hebrew's iso-8859-8-i (logical order), ...
_LABELS = {
    "windows-874": "cp874",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-8-e": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "iso-8859-6-e": "iso8859-6",
    "x-mac-roman": "mac-roman",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "x-gbk": "gb18030",
    "x-euc-jp": "euc_jp",
    "x-windows-949": "cp949",
}


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


def clean(text: str) -> str:
    """Text that any database can store: undecodable bytes (lone surrogates) become '?', and
    NUL, which PostgreSQL refuses in text (SQLite keeps it), becomes U+FFFD on either."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if text.isascii():  # most header text: nothing to replace
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


class TextSource(StrEnum):
    PLAIN = "plain"  # a text/plain body
    HTML = "html"  # an HTML-only message, converted
    NONE = "none"  # no readable body


@dataclass(frozen=True)
class Content:
    """What extraction reads: the body as text, and the attachments by name, type and size."""

    text: str
    source: TextSource
    charset: str | None  # the charset the text was decoded with
    charset_guessed: bool  # the declared charset was missing, unknown or wrong
    attachments: tuple[Attachment, ...]  # their content is never kept
    defects: tuple[str, ...]


def message_content(msg: Message) -> Content:
    """The text of a message (text/plain preferred, else HTML converted); never raises."""
    defects: list[str] = []
    body = _body(msg)
    text, charset, guessed, source = "", None, False, TextSource.NONE
    if body is not None:
        text, charset, guessed = decode_text(body, defects)
        source = TextSource.PLAIN
        if body.get_content_type() == "text/html":
            text, source = html_to_text(text), TextSource.HTML
    text = clean(text.replace("\r\n", "\n").replace("\r", "\n")[:MAX_TEXT_CHARS])
    return Content(
        text=text,
        source=source,
        charset=charset,
        charset_guessed=guessed,
        attachments=attachments(msg, body=body),
        defects=tuple(dict.fromkeys(defects)),
    )


def _body(msg: Message) -> Message | None:
    """The part a reader would see, as the stdlib's get_body picks it: the first inline
    text/plain, else the first text/html, inside multiparts but not attached messages."""
    found: dict[str, Message] = {}
    for part in _leaves(msg):
        kind = part.get_content_type()
        if (
            kind not in ("text/plain", "text/html")
            or part.get_content_disposition() == "attachment"
        ):
            continue
        found.setdefault(kind, part)
        if kind == "text/plain":
            break
    return found.get("text/plain") or found.get("text/html")


def decode_text(part: Message, defects: list[str]) -> tuple[str, str | None, bool]:
    """A text part decoded: the declared charset if it decodes cleanly, else UTF-8, else
    charset-normalizer's guess, else UTF-8 with replacement characters. Never raises."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        defects.append("undecodable-body")
        return "", None, False
    if not isinstance(payload, bytes):
        return "", None, False
    payload = payload[:MAX_BODY_BYTES]
    declared = _known_charset(part.get_content_charset(), defects)
    if declared is not None:
        try:
            return payload.decode(declared), declared, False
        except (UnicodeError, LookupError):
            defects.append("wrong-charset")
    try:
        return payload.decode("utf-8"), "utf-8", declared is not None
    except UnicodeError:
        pass
    best = from_bytes(payload[:MAX_SNIFF_BYTES]).best()
    guess = _known_charset(best.encoding if best is not None else None, defects)
    if guess is not None:
        return payload.decode(guess, "replace"), guess, True
    return payload.decode("utf-8", "replace"), "utf-8", True


def _known_charset(name: str | None, defects: list[str]) -> str | None:
    if not name:
        return None
    try:
        found = _codec(name.strip().strip("\"'")[:40])
    except (LookupError, ValueError):
        defects.append("unknown-charset")
        return None
    return SUPERSETS.get(found, found)


def _codec(label: str) -> str:
    """Python's name for the charset a label names; LookupError for none."""
    return codecs.lookup(_LABELS.get(label.lower(), label)).name


@lru_cache(maxsize=256)
def charset_for(label: str) -> str:
    """The charset to read text labelled `label` with: Python's name for it where Python
    knows it by another (_LABELS), the larger one it stands for in mail (SUPERSETS), else
    the label as it is, known or not."""
    try:
        found = _codec(label)
    except (LookupError, ValueError):
        return label
    return SUPERSETS.get(found, found if label.lower() in _LABELS else label)


def html_to_text(html: str) -> str:
    """HTML as lines of text: blocks and <br> end lines, scripts and styles are dropped. A
    body nested beyond MAX_HTML_DEPTH is read as no text, as a message nested beyond reason
    is read for its headers alone."""
    if _nests_beyond(html, MAX_HTML_DEPTH):
        return ""
    # The source's line breaks are spaces, as a reader sees them: CRLF as mail writes it too.
    flat = html.replace("\r", " ").replace("\n", " ").replace("\t", " ").replace("\v", " ")
    marked = _CELL_END.sub("\\g<0>\t", _BLOCK.sub("\n<", _BREAK.sub("\v\n<", flat)))
    try:
        tree = LexborHTMLParser(marked)
        for node in tree.css("script, style, head, title"):
            node.decompose()
        root = tree.body or tree.root
        text = root.text(deep=True, separator="", strip=False) if root is not None else ""
    except Exception:  # the parser refuses some inputs outright; the tags still go
        return ""
    lines = []
    for line in text.split("\n"):
        if line.strip(" \t\f"):  # a reader sees it: text, a no-break space or a <br>
            lines.append(_SPACES.sub(" ", line).strip(" \t"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _nests_beyond(html: str, limit: int) -> bool:
    """Whether elements open inside each other more than `limit` deep, counted from the tags
    alone (an element left open counts as open). Few bodies have that many tags at all."""
    if html.count("<") <= limit:
        return False
    depth = 0
    for end in _NESTING_TAG.findall(html):
        if end:
            depth = max(depth - 1, 0)  # a stray end tag closes nothing
        else:
            depth += 1
            if depth > limit:
                return True
    return False


def attachments(msg: Message, *, body: Message | None = None) -> tuple[Attachment, ...]:
    """Every attached file (and attached message) by name, type and size, the body excepted."""
    found: list[Attachment] = []
    for part in _leaves(msg):
        if part is body:
            continue
        listed = _listed(part)
        if listed is not None:
            found.append(listed)
    return tuple(found)


def _listed(part: Message) -> Attachment | None:
    try:
        filename = _filename(part)
        attached = part.get_content_disposition() == "attachment" or filename
        if attached or part.get_content_maintype() not in ("text", "multipart"):
            return Attachment(clean(filename), clean(part.get_content_type()), _size(part))
    except Exception:  # a part too broken to describe is left out, never raised
        return None
    return None


def _leaves(msg: Message) -> Iterator[Message]:
    """The non-multipart parts, depth first, without recursion and within the limits; an
    attached message (message/rfc822) is one leaf, its own parts are not opened."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            if depth < MAX_DEPTH:
                children = part.get_payload()
                if isinstance(children, list):
                    stack.extend(
                        (child, depth + 1)
                        for child in reversed(children)
                        if isinstance(child, Message)
                    )
            continue
        yield part


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or ""
    except Exception:  # a hostile RFC 2231 parameter
        return ""
    return _decoded_words(name)[:255] if "=?" in name else name[:255]


def _decoded_words(name: str) -> str:
    """RFC 2047 words decoded, as most mail clients write a file name outside ASCII; the
    name as written if they do not decode (an unknown charset, a broken word)."""
    try:
        return str(make_header(decode_header(name[:1000])))
    except Exception:
        return name


def _size(part: Message) -> int:
    """The decoded size; base64 is counted, not decoded, so attachments cost no memory. An
    attached message counts its headers and parts as written (re-serializing it could fail)."""
    if part.is_multipart():
        return _written_size(part)
    try:
        raw = part.get_payload()  # decodes undecodable bytes by the declared charset
    except (LookupError, ValueError):
        return 0
    if not isinstance(raw, str):
        return 0
    if part.get("content-transfer-encoding", "").strip().lower() == "base64":
        stripped = len(raw) - sum(raw.count(c) for c in " \t\r\n")
        return max(0, stripped * 3 // 4 - raw.rstrip()[-2:].count("="))
    try:
        decoded = part.get_payload(decode=True)
    except Exception:
        return len(raw)
    return len(decoded) if isinstance(decoded, bytes) else len(raw)


def _written_size(msg: Message) -> int:
    size = 0
    stack: list[Message] = [msg]
    for _ in range(MAX_PARTS):
        if not stack:
            break
        part = stack.pop()
        size += sum(len(k) + len(str(v)) + 4 for k, v in part.raw_items())
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, Message))
        elif isinstance(payload, str):
            size += len(payload)
    return size
