"""Decide: recognise mail that no person wrote (bounces, auto-replies, role senders, invites)."""

from __future__ import annotations

import re
from collections.abc import Callable

from capture.bounces import detected, report_tree
from capture.parse import Address, ParsedMessage

# RFC 3834 and the vendor headers that auto-responders stamp on their replies.
AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-response")
# Out-of-office subject openings as mail clients write them, in several languages.
OUT_OF_OFFICE = re.compile(
    r"^\s*(?:"
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?reply|autoreply|auto-response|"
    r"on vacation|away from (?:the )?office|"
    r"abwesenheitsnotiz|automatische antwort|abwesend|"
    r"r[ée]ponse automatique|absence du bureau|absent du bureau|"
    r"respuesta autom[áa]tica|fuera de la oficina|"
    r"risposta automatica|fuori sede|fuori ufficio|"
    r"automatisch antwoord|afwezig|"
    r"resposta autom[áa]tica|ausente do escrit[óo]rio|"
    r"autosvar|fr[åa]nvaro|automaattinen vastaus|"
    r"automatyczna odpowied[źz]|poza biurem|automatick[áa] odpov[ěe]d|"
    r"автоматический ответ|нет на месте|"
    r"自動応答|自動返信|不在|自动回复|自動回覆|자동 응답|otomatik yan[\u0131i]t"
    r")",
    re.IGNORECASE,
)
NOREPLY = re.compile(r"^(?:no-?reply|do-?not-?reply|donotreply|noreply[.\-+_].*|.*[.\-_]noreply)$")
ROLE_MAILBOXES = frozenset(
    (
        *("info", "support", "help", "helpdesk", "service", "customerservice", "contact"),
        *("contactus", "hello", "admin", "administrator", "webmaster", "hostmaster"),
        *("postmaster", "mailer-daemon", "abuse", "billing", "accounts", "invoices"),
        *("notifications", "notification", "alerts", "newsletter", "news", "marketing"),
        *("team", "office", "jobs", "careers", "hr", "press", "media", "security"),
        *("privacy", "root", "bounce", "bounces"),
    )
)
# The report types (RFC 3464 delivery status, RFC 5965 abuse feedback, RFC 8098 read receipts)
# a decision's facts may name; any other is "other".
REPORT_TYPES = frozenset(("delivery-status", "feedback-report", "disposition-notification"))
MAX_SCANNED_HEADER = 2_000  # characters of one header value that flufl.bounce is given
BOUNCE_SENDERS = re.compile(r"mailer.daemon|postmaster|post_master|mail delivery|bounce")
BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status|fail|report|notification)|returned mail|mail delivery|"
    r"failure notice|delivery has failed|not delivered|could not be delivered|"
    r"unzustellbar|non remis|non-remise|エラー|退信|error",
    re.IGNORECASE,
)

# What delivery-failure notices say, in the words MTAs use.
DSN_PHRASES = re.compile(
    r"could not be delivered|couldn't be delivered|undeliverable|delivery (?:has )?failed|"
    r"permanent (?:error|failure|fatal)|user unknown|unknown user|no such user|"
    r"mailbox (?:unavailable|not found|is full|full)|recipient address rejected|"
    r"address rejected|does not exist|delivery status notification|returned to sender|"
    r"550[ -]5\.\d\.\d|5\.1\.1|554[ -]|message was not delivered|not a member|"
    r"could not deliver|error delivering|while attempting to deliver|is delayed|"
    r"mail delivery failed|duplicated message-id|loop alert",
    re.IGNORECASE,
)


def _insensitive(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    """`pattern.search(text)`, quicker for ASCII text: lowercased once and searched without
    IGNORECASE, which makes the engine fold every character it compares. For ASCII text the
    two agree, the pattern's letters being lowercase; other text takes the pattern itself."""
    assert pattern.flags & re.IGNORECASE and not re.search(r"(?<!\\)[A-Z]", pattern.pattern)
    folded = re.compile(pattern.pattern)

    def search(text: str) -> bool:
        if text.isascii():
            return folded.search(text.lower()) is not None
        return pattern.search(text) is not None

    return search


subject_says_bounce = _insensitive(BOUNCE_SUBJECT)
says_delivery_failed = _insensitive(DSN_PHRASES)


def auto_reply_signal(message: ParsedMessage) -> str | None:
    """Which sign says an auto-responder wrote this, or None."""
    auto_submitted = (message.header("auto-submitted") or "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return "auto-submitted"
    if any(message.header(h) is not None for h in AUTO_REPLY_HEADERS):
        return "x-autoreply"
    if (message.header("precedence") or "").strip().lower() == "auto_reply":
        return "precedence"
    if OUT_OF_OFFICE.match(message.subject):
        return "subject"
    return None


def report_type(message: ParsedMessage) -> str | None:
    """Which kind of multipart/report (one of REPORT_TYPES, else `other`), or None. The
    parameter is the sender's own words and facts outlive a dropped message, so only the
    registered kinds are kept."""
    content_type = (message.header("content-type") or "").lower()
    if not content_type.startswith("multipart/report"):
        return None
    match = re.search(r"report-type\s*=\s*\"?([a-z-]+)", content_type)
    if match is None:
        return "unknown"
    return match.group(1) if match.group(1) in REPORT_TYPES else "other"


def bounce_signal(message: ParsedMessage) -> str | None:
    """`dsn` for a standard delivery report, `detected` for one only a heuristic finds."""
    kind = report_type(message)
    if kind == "delivery-status":
        return "dsn"
    if not looks_like_bounce(message):
        return None
    # Our own sender names and phrases first: they cost microseconds, and most bounces say so.
    sender = message.sender.local_part.lower() if message.sender else ""
    said = f"{message.subject}\n{message.text[:8000]}"
    if BOUNCE_SENDERS.search(sender) or says_delivery_failed(said):
        return "detected"
    # flufl.bounce knows the non-standard formats; it costs milliseconds, hence the gates. It
    # reads addresses superlinearly (a 2 KB From costs 15 ms, 32 KB half a second), so a
    # message with a longer header is left to our phrases.
    # The tree as parse_message reads it: a message nested beyond reason, for headers only.
    if all(len(value) <= MAX_SCANNED_HEADER for _, value in message.headers) and detected(
        report_tree(message.raw)
    ):
        return "detected"
    return None


def looks_like_bounce(message: ParsedMessage) -> bool:
    sender = message.sender
    text = f"{sender.name} {sender.local_part}".lower() if sender else ""
    if BOUNCE_SENDERS.search(text) or (sender and NOREPLY.match(sender.local_part.lower())):
        return True
    return subject_says_bounce(message.subject) or not message.from_


def role_kind(address: Address) -> str | None:
    """`noreply` or `role` for mailboxes that are not a person, else None."""
    local = address.local_part.lower()
    if NOREPLY.match(local):
        return "noreply"
    base = re.split(r"[+]", local, maxsplit=1)[0]
    return "role" if base in ROLE_MAILBOXES else None


def calendar_only(message: ParsedMessage) -> bool:
    """An invitation or calendar reply with no more than a generated line of text."""
    types = set(message.content_types)
    has_calendar = "text/calendar" in types or "application/ics" in types
    return has_calendar and len(message.text.strip()) < 400
