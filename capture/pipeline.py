"""The one pipeline every channel calls: receive → parse → decide → file → record."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app import crm, ledger, webhooks
from app.db import lower_forms
from app.filing import Filing, file_message, makes_contacts
from app.freshness import mark_undeliverable
from app.models import (
    Contact,
    DecisionRecord,
    Employee,
    EmployeeAlias,
    Message,
    PersonalContact,
    Receipt,
    Suppression,
)
from app.prepared import Prepared, PreparedIn
from app.security import Principal
from capture.bounces import bounced_recipients
from capture.forwards import ForwardedAddress, ForwardedMessage, find_attached, find_forwarded
from capture.keyed import keyed_digest
from capture.parse import Address, ParsedMessage, parse_date, parse_message
from capture.submitters import dmarc_failed
from policies.engine import Engine
from policies.headers import settled_on_headers
from policies.model import Channel, Decision, Outcome
from policies.observe import (
    Ahead,
    Consent,
    Context,
    Observations,
    Submitter,
    address_tokens,
    family_name,
    is_internal,
)

# Statements prepared once and run on the DB-API cursor: this is the SMTP hot path.
_KNOWN = PreparedIn(  # in any case, as filing finds a contact (ix_contacts_address_lower)
    lambda binds: sa.select(sa.func.lower(Contact.address)).where(  # binds: lower_forms
        sa.func.lower(Contact.address).in_(binds)
    )
)
_SUPPRESSED = PreparedIn(
    lambda binds: sa.select(Suppression.address_token, Suppression.kind).where(
        Suppression.address_token.in_(binds)
    )
)
_PERSONAL = Prepared(
    sa.select(PersonalContact.address_token).where(
        PersonalContact.employee_id == sa.bindparam("employee")
    )
)
_EMPLOYEE = Prepared(
    sa.select(
        Employee.id, Employee.email, Employee.name, Employee.capture_paused, Employee.private_tags
    ).where(
        sa.or_(
            Employee.email == sa.bindparam("address"),
            Employee.id.in_(
                sa.select(EmployeeAlias.employee_id).where(
                    EmployeeAlias.address == sa.bindparam("address")
                )
            ),
        )
    )
)
_ALIASES = Prepared(
    sa.select(EmployeeAlias.address).where(EmployeeAlias.employee_id == sa.bindparam("employee"))
)
_REPLIED = PreparedIn(
    lambda binds: (
        sa.select(Message.outcome)
        .where(Message.message_id.in_(binds))
        .order_by(crm.KEPT_FIRST)
        .limit(1)
    )
)
_RECEIPT = Prepared(
    sa.select(Receipt.message_id, DecisionRecord.id, DecisionRecord.outcome, DecisionRecord.rules)
    .join(DecisionRecord, DecisionRecord.id == Receipt.decision_id)
    .where(Receipt.key == sa.bindparam("key"))
)
_INSERT_RECEIPT = Prepared(
    sa.insert(Receipt), keys=("key", "decision_id", "message_id", "created_at")
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope, or its equivalent for IMAP and import."""

    mail_from: str
    rcpt_tos: tuple[str, ...] = ()
    authenticated_as: str | None = None  # the employee an SMTP AUTH app password belongs to
    dkim_domains: frozenset[str] = frozenset()  # DKIM passes a trusted relay vouched for
    sent_folder: bool = False  # IMAP and import: read from the employee's Sent folder
    trusted_relay: bool = False  # delivered by a relay whose headers we believe
    spamd_score: float | None = None  # SpamAssassin's spamd, where one is configured


MAILBOX_CHANNELS = frozenset({Channel.IMAP, Channel.IMPORT})  # read from a mailbox, not sent


class Lookups:
    """What one transaction asks the database about people, each question asked once: who
    owns an address (a mailbox's batch asks about its owner and the same few senders for
    every message), which participants are known contacts, and whose consent is withdrawn.
    A batch asks about all its participants in a few statements (`prefetch`) rather than two
    a message. Lookups and consent are read at the first question; an employee or an
    erasure changed meanwhile is seen from the next transaction on. Contacts filed by this
    transaction are asked again (`forget`)."""

    def __init__(self, conn: sa.Connection, secret: bytes) -> None:
        self.conn = conn
        self.secret = secret
        self._found: dict[str, Submitter | None] = {}
        self._personal: dict[int, frozenset[str]] = {}
        self._known: dict[str, bool] = {}  # address: a contact or not
        self._withdrawn: dict[str, frozenset[str]] = {}  # address: erased/objected, or none

    def find(self, address: str) -> Submitter | None:
        wanted = address.strip().lower()
        if wanted not in self._found:
            self._found[wanted] = find_submitter(self.conn, wanted)
        return self._found[wanted]

    def personal_contacts(self, employee_id: int) -> frozenset[str]:
        """The address tokens of the contacts this employee marked personal (tens, rarely
        more than hundreds): read whole once, not asked about each message's participants."""
        if employee_id not in self._personal:
            rows = _PERSONAL.rows(self.conn, {"employee": employee_id})
            self._personal[employee_id] = frozenset(token for (token,) in rows)
        return self._personal[employee_id]

    def prefetch(self, messages: Iterable[ParsedMessage]) -> None:
        """Ask about every participant of a batch at once."""
        addresses = [a.address for message in messages for a in message.participants]
        self.known_contacts(addresses)
        self.consent(addresses)

    def known_contacts(self, addresses: Iterable[str]) -> frozenset[str]:
        wanted = list(dict.fromkeys(addresses))
        unasked = [a for a in wanted if a not in self._known]
        if unasked:
            forms = list(dict.fromkeys(f for a in unasked for f in lower_forms(a)))
            found = {row[0].lower() for row in _KNOWN.rows(self.conn, forms)}
            self._known.update((a, a.lower() in found) for a in unasked)
        return frozenset(a for a in wanted if self._known[a])

    def consent(self, addresses: Iterable[str]) -> Consent:
        wanted = list(dict.fromkeys(addresses))
        tokens: dict[str, list[str]] = {}  # the addresses each token stands for
        for address in wanted:
            if address not in self._withdrawn:
                for token in address_tokens(self.secret, address):
                    tokens.setdefault(token, []).append(address)
        if tokens:
            withdrawn: dict[str, set[str]] = {a: set() for a in wanted if a not in self._withdrawn}
            for token, kind in _SUPPRESSED.rows(self.conn, list(tokens)):
                for address in tokens[token]:
                    withdrawn[address].add(kind)
            self._withdrawn.update((a, frozenset(kinds)) for a, kinds in withdrawn.items())
        return Consent(
            erased=frozenset(a for a in wanted if "erased" in self._withdrawn[a]),
            objected=frozenset(a for a in wanted if "objected" in self._withdrawn[a]),
        )

    def forget(self, addresses: Iterable[str]) -> None:
        """Filing may have made these addresses contacts: ask again next time about those
        that were not (filing never unmakes a contact)."""
        for address in addresses:
            if self._known.get(address) is False:
                del self._known[address]


class BodyNeededError(Exception):
    """A header-only decision the body could still change: fetch the body and ask again."""


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    decision_id: int
    message_id: int | None
    rules: tuple[str, ...]
    duplicate: bool = False


class Standing(enum.Enum):
    """Who asks for an explanation, and so what of the employee named it may draw on."""

    OWN = "own"  # the employee themself (and the command line): their settings too
    NAMED = "named"  # compliance, admin: their addresses and name, none of their settings
    ADDRESS = "address"  # anyone else: an employee with that address alone


@dataclass(frozen=True)
class Explanation:
    """A decision with everything behind it; computed, never stored."""

    decision: Decision
    observations: Observations
    message: ParsedMessage
    contacts: tuple[str, ...]


class Pipeline:
    """Owns the policy in force; each `process` call is one database transaction."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        engine: Engine,
        *,
        org_domains: frozenset[str],
        secret: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        readers: sessionmaker[Session] | None = None,
        require_proof: bool = False,
        authserv_id: str = "",
        capture_addresses: frozenset[str] = frozenset(),
    ) -> None:
        self.require_proof = require_proof  # envelope sender alone is not enough
        # Lower-case; never participants, whether an envelope names them or not.
        self.capture_addresses = capture_addresses
        self.authserv_id = authserv_id  # whose Authentication-Results a mailbox's mail trusts
        self.sessions = sessions
        self.readers = readers or sessions  # explain reads without taking the write lock
        self.engine = engine  # replaced whole when a new policy is published
        self.org_domains = org_domains
        self.secret = secret
        self.clock = clock

    def process(self, raw: bytes, envelope: Envelope, channel: Channel) -> Result:
        """Decide, file and record one message in its own transaction, committed on return."""
        message = parse_message(raw)
        try:
            with self.sessions() as session, session.begin():
                return self.process_in(session, message, envelope, channel)
        except IntegrityError:
            # A concurrent retry of the same message won the race; its receipt answers us.
            with self.sessions() as session, session.begin():
                return self.process_in(session, message, envelope, channel)

    def lookups(self, conn: sa.Connection, *, writing: bool = True) -> Lookups:
        """The lookups of one transaction on `conn` (see Lookups). One that writes takes the
        decision log's lock first (PostgreSQL), before it reads who is erased or objects, as
        an erasure takes it before it writes: what it read then stays true until it commits."""
        if writing:
            ledger.wait_for_appends(conn)
        return Lookups(conn, self.secret)

    def connections(self) -> sa.Engine:
        """Connections that write: what the group writer runs its transactions on."""
        bind = self.sessions.kw["bind"]
        assert isinstance(bind, sa.Engine)
        return bind

    def process_in(
        self,
        db: Session | sa.Connection,
        message: ParsedMessage,
        envelope: Envelope,
        channel: Channel,
        *,
        headers_only: bool = False,
        body_on_request: bool = True,
        lookups: Lookups | None = None,
        ahead: Ahead | None = None,
        header_digest: str | None = None,
    ) -> Result:
        """Decide, file and record one message inside the caller's transaction.

        Prepared statements on the transaction's connection: this is the SMTP hot path. With
        `headers_only` (a mailbox's message parsed from its header section), a decision the
        body could change raises BodyNeededError before anything is written, unless the body
        cannot be had (`body_on_request` False: over the size cap); either way the record says
        `body_read: false`. `lookups`, one
        per transaction, spares a batch the same questions about people for every message.
        `ahead`: observe's work on the message alone, if done ahead (used if it is this one's).
        `header_digest`, for a mailbox's message read whole: its header section's digest, which
        keys its receipt as when its headers settle it, so that it is recognised however it
        is read next time (a receipt keyed by the whole message's digest, from another
        channel or an earlier version, still answers)."""
        engine = self.engine
        conn = db.connection() if isinstance(db, Session) else db
        lookups = lookups if lookups is not None else self.lookups(conn)
        outer = message  # as the employee sent it: From is theirs, also for a forward
        message, channel = as_submitted(
            message, envelope, channel, self.org_domains, capture=self.capture_addresses
        )
        submitter = lookups.find(envelope.mail_from)
        key = self._receipt_key(envelope.mail_from, submitter, header_digest or message.digest)
        previous = _replay(conn, key)
        if previous is None and header_digest is not None:
            whole = self._receipt_key(envelope.mail_from, submitter, message.digest)
            previous = _replay(conn, whole)
        if previous is not None:
            return previous
        context = self._context(
            lookups,
            message,
            channel,
            submitter,
            envelope,
            submitter_proven=self._proven(outer, envelope, submitter, channel),
            from_employee=_from_employee(lookups, outer, submitter),
            outer=outer,
        )
        decision, observations = engine.decide(message, context, ahead=ahead)
        if headers_only:
            if body_on_request and not settled_on_headers(
                engine, decision, observations, message, self.secret
            ):
                raise BodyNeededError
            decision = replace(decision, facts=decision.facts | {"body_read": False})
        now = context.now
        record = ledger.append(
            conn,
            ledger.Entry(
                created_at=now,
                channel=channel,
                employee_id=submitter.employee_id if submitter else None,
                decision=decision,
                message_id_hmac=ledger.message_id_hmac(self.secret, message.message_id),
            ),
        )
        stored: int | None = None
        if submitter is not None and decision.outcome.keeps_message:
            filing = Filing(
                employee_id=submitter.employee_id,
                employee_addresses=submitter.addresses,
                channel=channel,
                org_domains=self.org_domains,
                now=now,
                hold_days=engine.policy.policy.retention.hold_days,
                secret=self.secret,
            )
            stored = file_message(conn, message, decision, decision_id=record.id, at=filing)
            if makes_contacts(decision.outcome):  # of external correspondents only
                external = (a.address for a in message.participants)
                lookups.forget(a for a in external if not is_internal(a, self.org_domains))
        if (
            submitter is not None
            and decision.outcome is not Outcome.REJECT
            and decision.facts.get("bounce")
        ):
            # Whatever the policy does with the report itself, the contacts it names are
            # marked; not by a refused one, which anyone can send in an employee's envelope.
            when = message.date or now
            named = bounced_recipients(message, headers_only=headers_only)
            mark_undeliverable(conn, named, when=when, now=now)
        _INSERT_RECEIPT.run(
            conn, {"key": key, "decision_id": record.id, "message_id": stored, "created_at": now}
        )
        webhooks.on_decision(
            conn,
            decision_id=record.id,
            outcome=decision.outcome.value,
            channel=channel.value,
            employee_id=submitter.employee_id if submitter else None,
            message_id=stored,
            now=now,
        )
        return Result(decision.outcome, record.id, stored, decision.rules_hit)

    def explain(
        self,
        raw: bytes,
        envelope: Envelope,
        channel: Channel,
        *,
        standing: Standing = Standing.OWN,
        reader: Principal | None = None,
    ) -> Explanation:
        """The decision this message would get now; reads the database, writes nothing.

        The submitter is the envelope sender, else the From address; one who is not (yet) an
        employee is assumed to be one (and proven, where proof is required), so that the policy
        itself is what gets explained. What of a real employee counts depends on `standing`:
        their own settings (personal contacts, paused capture, private tags) are theirs to
        see, not the asker's. Given a `reader`, the mail it answers counts only if the reader
        may see it: else the answer would confirm a colleague's private or held message to
        whoever knows its Message-ID.
        """
        outer = parse_message(raw)
        address = envelope.mail_from or (outer.sender.address if outer.sender else "")
        message, channel = as_submitted(
            outer, envelope, channel, self.org_domains, capture=self.capture_addresses
        )
        with self.readers() as session:
            conn = session.connection()
            found = None if standing is Standing.ADDRESS else find_submitter(conn, address)
            if found is not None and standing is Standing.NAMED:
                # Their addresses and name decide as in the listener; no id, so no settings.
                found = Submitter(0, found.addresses, family_name=found.family_name)
            submitter = found or _hypothetical(address)
            lookups = self.lookups(conn, writing=False)
            context = self._context(
                lookups,
                message,
                channel,
                submitter,
                envelope,
                from_employee=_from_employee(lookups, outer, submitter),
                submitter_proven=channel not in MAILBOX_CHANNELS or not self.forged(outer),
                outer=outer,
            )
            if reader is not None:
                seen = crm.answers_visible(conn, reader, _replied_ids(message))
                context = replace(context, replies_to_known=seen.known, replies_to_kept=seen.kept)
            session.rollback()
        decision, observations = self.engine.decide(message, context)
        contacts = tuple(
            a.address
            for a in message.participants
            if not is_internal(a.address, self.org_domains)
            and (submitter is None or a.address not in submitter.addresses)
        )
        return Explanation(decision, observations, message, contacts)

    def _context(
        self,
        lookups: Lookups,
        message: ParsedMessage,
        channel: Channel,
        submitter: Submitter | None,
        envelope: Envelope,
        *,
        from_employee: bool,
        outer: ParsedMessage,
        submitter_proven: bool = True,
    ) -> Context:
        """What the database knows about the participants, with what the envelope says (one
        Context built, not copied: a message at a time), alike for a decision and for its
        explanation. Whether From is an employee is left to the callers: they ask it of the
        message as sent, not as submitted. `outer`: the message as sent, whose private mark
        (Subject tag, Sensitivity) counts also when it stands for a message it forwards."""
        addresses = [a.address for a in message.participants]
        answered = _answered(lookups.conn, message)
        return Context(
            channel=channel,
            org_domains=self.org_domains,
            submitter=submitter and self._with_personal_contacts(lookups, submitter, addresses),
            known_contacts=lookups.known_contacts(addresses),
            now=self.clock(),
            secret=self.secret,
            consent=lookups.consent(addresses),
            private_tags=tuple(self.engine.policy.policy.private_subject_tags),
            replies_to_known=answered.known,
            replies_to_kept=answered.kept,
            from_employee=from_employee,
            sent_folder=envelope.sent_folder,
            submitter_proven=submitter_proven,
            spamd_score=envelope.spamd_score,
            # A mailbox's own headers were written by our own servers, as a trusted relay's.
            trusted_headers=envelope.trusted_relay or channel in MAILBOX_CHANNELS,
            submitted_subject=outer.subject,
            submitted_sensitivity=outer.header("sensitivity") or "",
        )

    def _proven(
        self,
        message: ParsedMessage,
        envelope: Envelope,
        submitter: Submitter | None,
        channel: Channel,
    ) -> bool:
        """Whether the submitter is who they say: always, unless proof is required; then the
        From address (a forward's: the forwarder's) must be the submitter's own, proven by
        SMTP AUTH as that employee or by a trusted relay's DKIM pass aligned with From. Each
        proves one thing: AUTH the envelope sender, DKIM the From domain. Mail read from a
        mailbox or imported is the employee's by configuration: an admin added the mailbox
        for them, the operator ran the import; unless it is `forged`."""
        if channel in MAILBOX_CHANNELS:
            return not self.forged(message)
        if not self.require_proof:
            return True
        sender = message.sender.address.lower() if message.sender else ""
        if submitter is None or sender not in submitter.addresses:
            return False
        if envelope.authenticated_as in submitter.addresses:
            return True
        domain = message.sender.domain if message.sender else ""
        aligned = any(domain == d or domain.endswith("." + d) for d in envelope.dkim_domains)
        return aligned and is_internal(f"x@{domain}", self.org_domains)

    def forged(self, message: ParsedMessage) -> bool:
        """Whether mail read from a mailbox claims one of our own addresses in From while
        the organization's mail server (the topmost Authentication-Results under our
        authserv-id) found it failing DMARC: mail from outside in a colleague's name, which
        a journal would otherwise file as that colleague's sent mail."""
        sender = message.sender.address if message.sender else ""
        if not self.authserv_id or not sender or not is_internal(sender, self.org_domains):
            return False
        return dmarc_failed(message.headers, self.authserv_id)

    def _tokens(self, addresses: list[str]) -> dict[str, str]:
        return {t: a for a in addresses for t in address_tokens(self.secret, a)}

    def _with_personal_contacts(
        self, lookups: Lookups, submitter: Submitter, addresses: list[str]
    ) -> Submitter:
        listed = lookups.personal_contacts(submitter.employee_id)
        if not listed:
            return submitter
        personal = frozenset(a for t, a in self._tokens(addresses).items() if t in listed)
        return replace(submitter, personal_contacts=personal)

    def _receipt_key(self, mail_from: str, submitter: Submitter | None, digest: str) -> str:
        who = f"employee:{submitter.employee_id}" if submitter else f"sender:{mail_from.lower()}"
        return keyed_digest(self.secret, f"{who}\n{digest}".encode()).hex()


def as_submitted(
    message: ParsedMessage,
    envelope: Envelope,
    channel: Channel,
    org_domains: frozenset[str] = frozenset(),
    *,
    capture: frozenset[str] = frozenset(),
) -> tuple[ParsedMessage, Channel]:
    """What an employee sent us stands for: a forward (the capture address visible in To or
    Cc, forwarded content inside) stands for the message it carries, whose sender and
    recipients become the participants; capture only in the envelope is a BCC. So is mail
    the employee sends to someone outside with the capture address copied in: forwarding a
    customer's mail to another customer is their own message to that customer, and its
    participants are theirs, not the forwarded mail's. `capture`: every capture address
    configured, besides those the envelope names."""
    capture = capture_addresses(envelope, capture)
    visible = any(a.address.lower() in capture for a in message.recipients)
    message = without_capture_addresses(message, envelope, capture=capture)
    outside = any(not is_internal(a.address.lower(), org_domains) for a in message.recipients)
    if channel is not Channel.FORWARD and not (channel is Channel.BCC and visible):
        return message, channel
    if channel is Channel.BCC and outside:
        return message, channel
    forwarded = find_forwarded(message.text, subject=message.subject)
    if forwarded is not None:
        return _original(message, forwarded, envelope, capture), Channel.FORWARD
    attached = find_attached(message.raw) if "message/rfc822" in message.content_types else None
    if attached is not None and attached.sender is not None:
        return _attached(message, attached, envelope, capture), Channel.FORWARD
    return message, Channel.FORWARD if channel is Channel.FORWARD else Channel.BCC


def _original(
    message: ParsedMessage, forwarded: ForwardedMessage, envelope: Envelope, capture: frozenset[str]
) -> ParsedMessage:
    """An inline forward stands for the message it carries; a capture address its block
    names (a reply to all on mail that copied it) is no more a participant than in an
    attached one."""

    def mailboxes(found: tuple[ForwardedAddress, ...]) -> tuple[Address, ...]:
        return tuple(Address(f.address, f.name or "") for f in found if f.address)

    original = replace(
        message,
        from_=mailboxes((forwarded.sender,)),
        to=mailboxes(forwarded.to),
        cc=mailboxes(forwarded.cc),
        reply_to=(),
        subject=forwarded.subject or message.subject,
        date=parse_date(forwarded.date) or message.date,  # else no later than forwarded
        text=forwarded.body or message.text,
    )
    return without_capture_addresses(original, envelope, capture=capture)


def _attached(
    message: ParsedMessage, attached: ParsedMessage, envelope: Envelope, capture: frozenset[str]
) -> ParsedMessage:
    """A forward "as attachment" stands for the attached message, as an inline one does: its
    date and Message-IDs too, so that it is the same message as a copy of it from a mailbox
    and joins its thread."""
    attached = without_capture_addresses(attached, envelope, capture=capture)
    return replace(
        message,
        message_id=attached.message_id or message.message_id,
        date=attached.date or message.date,
        in_reply_to=attached.in_reply_to,
        references=attached.references,
        from_=attached.from_,
        to=attached.to,
        cc=attached.cc,
        reply_to=attached.reply_to,
        subject=attached.subject or message.subject,
        text=attached.text or message.text,
    )


def capture_addresses(envelope: Envelope, configured: frozenset[str]) -> frozenset[str]:
    """The capture addresses the envelope names, and every one configured (lower-case): a
    mailbox's copy has no envelope, and an SMTP envelope names only its own transaction's
    (capture addresses on two domains take two transactions)."""
    return configured | {address.lower() for address in envelope.rcpt_tos}


def without_capture_addresses(
    message: ParsedMessage, envelope: Envelope, *, capture: frozenset[str] = frozenset()
) -> ParsedMessage:
    """A capture address is where mail was sent, never a participant or a contact."""
    capture = capture_addresses(envelope, capture)
    if not capture:
        return message

    def keep(addresses: tuple[Address, ...]) -> tuple[Address, ...]:
        return tuple(a for a in addresses if a.address.lower() not in capture)

    to, cc, reply_to = keep(message.to), keep(message.cc), keep(message.reply_to)
    if len(to) + len(cc) + len(reply_to) == len(message.to + message.cc + message.reply_to):
        return message  # a BCC: nothing to take out, and no copy to make
    return replace(message, to=to, cc=cc, reply_to=reply_to)


def find_submitter(conn: sa.Connection, address: str) -> Submitter | None:
    """The employee owning this address (primary or alias), with all their addresses."""
    wanted = address.strip().lower()
    if not wanted:
        return None
    employee = _EMPLOYEE.first(conn, {"address": wanted})
    if employee is None:
        return None
    employee_id, email, name, capture_paused, private_tags = employee
    aliases = [row[0] for row in _ALIASES.rows(conn, {"employee": employee_id})]
    return Submitter(
        employee_id=employee_id,
        addresses=frozenset([email, *aliases]),
        capture_paused=bool(capture_paused),
        family_name=family_name(name),
        private_tags=tuple(private_tags or ()),
    )


def _from_employee(lookups: Lookups, message: ParsedMessage, submitter: Submitter | None) -> bool:
    sender = message.sender.address.lower() if message.sender else ""
    if submitter is not None and sender in submitter.addresses:
        return True
    return bool(sender) and lookups.find(sender) is not None


def _replied_ids(message: ParsedMessage) -> list[str]:
    """The Message-IDs the message answers: In-Reply-To and the recent References."""
    return [m for m in (message.in_reply_to, *message.references[-10:]) if m]


def _answered(conn: sa.Connection, message: ParsedMessage) -> crm.Answered:
    """What the message answers of the mail Mailroom holds (In-Reply-To or recent
    References)."""
    ids = _replied_ids(message)
    if not ids:
        return crm.Answered(False, False)
    rows = _REPLIED.rows(conn, ids)
    return crm.Answered.of(rows[0][0] if rows else None)


def _hypothetical(address: str) -> Submitter | None:
    wanted = address.strip().lower()
    return Submitter(employee_id=0, addresses=frozenset([wanted])) if wanted else None


def _replay(conn: sa.Connection, key: str) -> Result | None:
    """The committed outcome of a message already received from this submitter, if any.

    Not a refusal: what refused it (no proof yet, an address not yet an employee's) can be
    put right, and the sender's retry then deserves a fresh decision, not 550 for ever. Its
    receipt goes, so that the new decision's can take the key."""
    row = _RECEIPT.first(conn, {"key": key})
    if row is None:
        return None
    message_id, decision_id, outcome, rules = row
    if Outcome(outcome) is Outcome.REJECT:
        conn.execute(sa.delete(Receipt).where(Receipt.key == key))
        return None
    return Result(Outcome(outcome), decision_id, message_id, tuple(rules), True)
