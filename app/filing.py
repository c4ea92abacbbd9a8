"""File: a decided message against contacts, companies, its owner and their relationships."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app import webhooks
from app.db import lower_forms
from app.freshness import change, note_job_move, read_signature
from app.models import (
    Attachment,
    Company,
    Contact,
    ContactChange,
    Employee,
    EmployeeAlias,
    Message,
    MessageOwner,
    Participant,
    Relationship,
)
from app.prepared import Prepared, PreparedIn
from app.threads import file_thread
from capture.keyed import keyed_digest
from capture.parse import Address, ParsedMessage
from capture.people import display_name, person
from policies.model import Channel, Decision, Outcome, Visibility
from policies.observe import is_internal

ROLES = ("from", "to", "cc", "reply-to")


@dataclass(frozen=True, slots=True)
class Filing:
    """Who captured the message, through which channel, and what the organization is."""

    employee_id: int
    employee_addresses: frozenset[str]
    channel: Channel
    org_domains: frozenset[str]
    now: datetime
    hold_days: int
    secret: bytes = b""  # keys thread and same-mail digests: no subject is guessed from one

    def owns(self, address: str) -> bool:
        """Whether the address is the submitter's. Employee addresses are stored lowercased;
        mail often is not ("Alice@example.com" from Outlook)."""
        return address.lower() in self.employee_addresses


def dedupe_key(message: ParsedMessage, secret: bytes) -> str:
    """Message-ID with the sender, date and subject: the same mail from two employees, or by
    BCC and from a mailbox (where only its headers may have been read), is one message; a
    different message that reuses a Message-ID is not. A copy whose text differs from the
    text kept joins only its own submitter's message (`_may_join`). Keyed, since a message
    kept as metadata keeps its Message-ID, sender and date but not its subject."""
    if message.message_id:
        sender = message.sender.address if message.sender else ""
        date = message.date.isoformat() if message.date else ""
        basis = f"mid:{message.message_id}\n{sender}\n{date}\n{message.subject}"
    else:
        basis = f"raw:{message.digest}"
    return keyed_digest(secret, basis.encode("utf-8", "replace")).hex()


def file_message(
    conn: sa.Connection, message: ParsedMessage, decision: Decision, *, decision_id: int, at: Filing
) -> int:
    """Store a kept message (capture, metadata only or hold) and link it; returns its id."""
    assert decision.outcome.keeps_message, "drops and rejects are never filed"
    key = dedupe_key(message, at.secret)
    row = _MESSAGE_BY_KEY.first(conn, {"key": key})
    if row is not None and not _may_join(conn, row, message, decision.outcome, at.employee_id):
        key = hashlib.sha256(f"{key}\ncopy:{message.digest}".encode()).hexdigest()
        row = _MESSAGE_BY_KEY.first(conn, {"key": key})  # this copy's own, filed before
    existing = row[0] if row is not None else None
    contacts: dict[str, int] | None = None
    if existing is None:
        thread = file_thread(conn, message, at.secret, at.now)
        existing = _insert_message(
            conn, message, decision, key=key, decision_id=decision_id, thread=thread, at=at
        )
        contacts = _file_participants(conn, message, existing, decision.outcome, at)
        if decision.outcome is Outcome.CAPTURE:
            _record_attachments(conn, message, existing)
            read_signature(conn, message, contacts, message_row=existing, now=at.now)
    elif decision.outcome is Outcome.CAPTURE and row[2] != Outcome.CAPTURE.value:
        contacts = _take_text(conn, message, decision, row, at, decision_id=decision_id)
    held = decision.outcome is Outcome.HOLD_FOR_REVIEW
    owner = {  # this employee's copy, kept or waiting for their review as they decided
        "message_id": existing,
        "employee_id": at.employee_id,
        "channel": at.channel.value,
        "created_at": at.now,
        "outcome": decision.outcome.value,
        "held_until": at.now + timedelta(days=at.hold_days) if held else None,
        "decision_id": decision_id,  # theirs, not the first filer's that the message names
    }
    # Each owner's relationships count the message once, whichever copy was filed first.
    if _statements(conn.dialect.name).add_owner.scalar(conn, owner) is not None:
        if contacts is None:
            contacts = {a: c for a, c in _FILED_CONTACTS.rows(conn, {"message_id": existing})}
        _touch_relationships(conn, message, contacts, at)
    elif contacts is None and decision.outcome is Outcome.CAPTURE:  # joined a capture
        _capture_own_copy(conn, message, row, at, decision_id=decision_id)
    return int(existing)


def _capture_own_copy(
    conn: sa.Connection, message: ParsedMessage, row: Any, at: Filing, *, decision_id: int
) -> None:
    """The submitter's capture of mail a colleague has captured makes their own copy a
    capture, as when no colleague had (`_take_text`): a copy waiting for their review (the
    capture is their answer; it counts with its people now), and one kept as metadata when
    the text they sent is the text kept (it shows them nothing they did not send; headers
    alone, which their copy matched, prove nothing about the text)."""
    message_row, text = row[0], row[1]
    own = {"message_row": message_row, "employee": at.employee_id}
    was = conn.scalar(_OWNER_OUTCOME, own)
    held = was == Outcome.HOLD_FOR_REVIEW.value
    if not held and not (was == Outcome.METADATA_ONLY.value and text == message.text):
        return
    conn.execute(_OWNER_CAPTURES, own | {"decision": decision_id})
    if held:
        contacts = {a: c for a, c in _FILED_CONTACTS.rows(conn, {"message_id": message_row})}
        _touch_relationships(conn, message, contacts, at)


def _may_join(
    conn: sa.Connection, row: Any, message: ParsedMessage, outcome: Outcome, employee_id: int
) -> bool:
    """Whether this copy may join the message filed under its key. The key is made of headers
    a colleague may have been shown (a subject-only capture shows them all), so matching it
    proves nothing, and joining makes the submitter an owner, who reads the text. A copy
    joins a message that keeps text only if it already is the submitter's, or if the copy's
    text is that text. Nor does a kept copy join a message waiting for a colleague's review
    (it would wait, and go, with theirs), or a held one a kept message (it would skip the
    review its employee's decision asked for)."""
    message_id, text, filed_as, _ = row
    held = outcome is Outcome.HOLD_FOR_REVIEW
    if (filed_as == Outcome.HOLD_FOR_REVIEW.value) == held and (
        text is None or text == message.text
    ):
        return True
    owner = _OWNER.scalar(conn, {"message_id": message_id, "employee_id": employee_id})
    return owner is not None


def _take_text(
    conn: sa.Connection,
    message: ParsedMessage,
    decision: Decision,
    row: Any,
    at: Filing,
    *,
    decision_id: int,
) -> dict[str, int]:
    """A capture joining a message kept without text (a copy decided as metadata, often on
    its headers alone), or the submitter's own copy waiting for their review, keeps its
    subject, text, attachments and signature as a first capture would; the message becomes
    a capture, seen by colleagues no more widely than either decision says. Owners whose
    copy was kept as metadata see it as colleagues do: the headers they matched prove
    nothing about the text (`_may_join`); a colleague's copy waiting for review still waits.
    So one employee's capture and hold of the same mail end as a capture in either order.
    Returns its contacts."""
    message_row, _, filed_as, visibility = row
    conn.execute(
        _TAKE_TEXT.values(
            subject=message.subject,
            body_text=message.text,
            visibility=_narrower(visibility, decision.visibility),
        ),
        {"message_row": message_row},
    )
    if filed_as == Outcome.HOLD_FOR_REVIEW.value:  # held mail was filed with no contacts
        contacts = file_contacts(conn, message_row, at.org_domains, at.now)
    else:
        contacts = {a: c for a, c in _FILED_CONTACTS.rows(conn, {"message_id": message_row})}
    # The submitter's own copy kept before is their capture now; one that waited for their
    # review had counted nothing with its people yet. This decision explains it now.
    own = {"message_row": message_row, "employee": at.employee_id}
    was = conn.scalar(_OWNER_OUTCOME, own)
    conn.execute(_OWNER_CAPTURES, own | {"decision": decision_id})
    if was == Outcome.HOLD_FOR_REVIEW.value:
        _touch_relationships(conn, message, contacts, at)
    _record_attachments(conn, message, message_row)
    read_signature(conn, message, contacts, message_row=message_row, now=at.now)
    return contacts


def _narrower(visibility: str, other: Visibility) -> str:
    """The one of the two that shows the message to fewer people (Visibility is ordered
    from the widest)."""
    order = list(Visibility)
    return max(Visibility(visibility), other, key=order.index).value


def _insert_message(
    conn: sa.Connection,
    message: ParsedMessage,
    decision: Decision,
    *,
    key: str,
    decision_id: int,
    thread: int,
    at: Filing,
) -> int:
    held = decision.outcome is Outcome.HOLD_FOR_REVIEW
    # A message the employee sent us may wait with its text; one read from a mailbox waits
    # with none, and is fetched again only if the employee chooses to capture it.
    submitted = at.channel in (Channel.BCC, Channel.FORWARD)
    with_content = decision.outcome is Outcome.CAPTURE or (held and submitted)
    sender = message.sender
    outbound = sender is not None and at.owns(sender.address)
    values: dict[str, Any] = {
        "dedupe_key": key,
        "message_id": message.message_id,
        "content_digest": message.digest,
        "subject": message.subject if with_content else None,
        "body_text": message.text if with_content else None,
        "sent_at": message.date,
        "direction": "outbound" if outbound else "inbound",
        "outcome": decision.outcome.value,
        "visibility": "private" if held else decision.visibility.value,
        "size": message.size,
        "held_until": at.now + timedelta(days=at.hold_days) if held else None,
        "decision_id": decision_id,
        "created_at": at.now,
        "thread_id": thread,
    }
    return int(_INSERT_MESSAGE.scalar(conn, values))


def makes_contacts(outcome: Outcome) -> bool:
    """Whether filing a message with this outcome makes contacts of its correspondents: a
    held message waits for its employee first."""
    return outcome in (Outcome.CAPTURE, Outcome.METADATA_ONLY)


def _file_participants(
    conn: sa.Connection, message: ParsedMessage, message_row: int, outcome: Outcome, at: Filing
) -> dict[str, int]:
    """Participant rows for every address; contacts only for external ones on kept mail:
    never an employee's address or alias (the submitter's or a colleague's), in any case."""
    make_contacts = makes_contacts(outcome)
    employees = _employees(conn, message, at)
    contacts: dict[str, int] = {}
    rows = []
    for role, addresses in zip(
        ROLES, (message.from_, message.to, message.cc, message.reply_to), strict=True
    ):
        for addr in addresses:
            employee = employees.get(addr.address.lower())
            own = employee is not None or is_internal(addr.address, at.org_domains)
            if make_contacts and not own and addr.address not in contacts:
                contact = _contact_id(conn, addr, at.now)
                if contact is not None:
                    contacts[addr.address] = contact
            rows.append(
                {
                    "message_id": message_row,
                    "role": role,
                    "address": addr.address,
                    "name": addr.name,
                    "contact_id": contacts.get(addr.address),
                    "employee_id": employee,
                }
            )
    _INSERT_PARTICIPANT.run_many(conn, rows)
    return contacts


def file_contacts(
    conn: sa.Connection, message_row: int, org_domains: frozenset[str], now: datetime
) -> dict[str, int]:
    """Contacts for the participants of a message filed while it waited for review (held
    mail makes none), as `_file_participants` makes them: never an employee's address
    (marked when it was filed) or the organization's, nor a role mailbox. By address."""
    contacts: dict[str, int] = {}
    for participant, address, name in conn.execute(_HELD_PARTICIPANTS, {"message": message_row}):
        contact = contacts.get(address)
        if contact is None and not is_internal(address.lower(), org_domains):
            contact = _contact_id(conn, Address(address, name), now)
        if contact is not None:
            contacts[address] = contact
            conn.execute(_SET_CONTACT, {"participant": participant, "contact": contact})
    return contacts


def _employees(conn: sa.Connection, message: ParsedMessage, at: Filing) -> dict[str, int]:
    """The employee of each participant address that is one's (lowercased, as stored)."""
    found = {address: at.employee_id for address in at.employee_addresses}
    others = {a.address.lower() for a in message.participants} - found.keys()
    found.update((address, employee) for address, employee in _EMPLOYEE.rows(conn, list(others)))
    return found


def _contact_id(conn: sa.Connection, addr: Address, now: datetime) -> int | None:
    """The contact for this address (the one it was merged into, if it was), made if new:
    with its company unless the domain is free mail. None for a role mailbox or an address
    that is no person's. One known without a name gets the name this (kept) mail gives."""
    found_before = _CONTACT.rows(conn, lower_forms(addr.address))
    if found_before:
        contact_id, merged_into, name = min(found_before)
        if addr.name and not (name or merged_into):
            _name_contact(conn, contact_id, addr, now)
        return int(merged_into or contact_id)
    found = person(addr)  # names, validity and company, read only for someone new
    if found is None or found.is_role:
        return None
    if found.address != addr.address:
        return _contact_id(conn, replace(addr, address=found.address), now)
    company_id = None
    if found.company is not None:
        company = {"domain": found.company.domain, "name": found.company.name, "created_at": now}
        company_id = _get_or_create(conn, company, "domain")
    values = {
        "address": found.address,
        "name": found.name,
        "first_name": found.first[:100],
        "last_name": found.last[:100],
        "company_id": company_id,
        "created_at": now,
        "updated_at": now,
    }
    contact_id = _get_or_create(conn, values, "address", looked=True)  # _CONTACT above
    note_job_move(conn, contact_id, found, company_id, now)
    return contact_id


def _name_contact(conn: sa.Connection, contact_id: int, addr: Address, now: datetime) -> None:
    """Name a contact first seen as a bare address, as kept mail now names them. Only once
    (a statement a contact, not a message): a name known, or given through the API, stays,
    and so does an empty one a person left (a name with history was named before)."""
    if not display_name(addr.name, addr.address):
        return  # the address itself, a "via" or garbage: no name (and no costly person())
    found = person(addr)
    if found is None or found.is_role or not found.name:
        return
    values = {
        "contact": contact_id,
        "name": found.name,
        "first": found.first[:100],
        "last": found.last[:100],
        "now": now,
    }
    if _NAME_CONTACT.scalar(conn, values) is None:
        return  # named meanwhile, by another writer
    change(conn, contact_id, "name", "", found.name, message=None, observed=now, now=now)
    webhooks.emit(conn, "contact.updated", {"contact_id": contact_id}, now)


def _record_attachments(conn: sa.Connection, message: ParsedMessage, message_row: int) -> None:
    """Name, type and size of each attachment of a captured message; never the content."""
    _INSERT_ATTACHMENT.run_many(
        conn,
        [
            {
                "message_id": message_row,
                "filename": a.filename[:255],
                "content_type": a.content_type[:127],
                "size": a.size,
            }
            for a in message.attachments[:100]
        ],
    )


def _touch_relationships(
    conn: sa.Connection, message: ParsedMessage, contacts: dict[str, int], at: Filing
) -> None:
    sender = message.sender.address.lower() if message.sender else ""
    outbound = bool(sender) and at.owns(sender)
    count_exchange(
        conn,
        contacts,
        employee_id=at.employee_id,
        sender=sender,
        outbound=outbound,
        seen=message.date or at.now,
    )


def count_exchange(
    conn: sa.Connection,
    contacts: dict[str, int],
    *,
    employee_id: int,
    sender: str,
    outbound: bool,
    seen: datetime,
) -> None:
    """The owner's counts with each contact (`contacts`: by address) for one message:
    sent when one of the owner's addresses wrote it (`outbound`), received when the contact
    did (`sender`, lowercased). Once a message for each contact, however many of its
    addresses (merged into it, or in other cases) the message names."""
    exchanged: dict[int, tuple[bool, bool]] = {}
    for address, contact_id in contacts.items():
        wrote = address.lower() == sender
        sent, received = exchanged.get(contact_id, (False, False))
        exchanged[contact_id] = (sent or (outbound and not wrote), received or wrote)
    bump = _statements(conn.dialect.name).bump_relationship
    for contact_id, (sent, received) in exchanged.items():
        if not (sent or received):
            continue
        bump.run(
            conn,
            {
                "employee_id": employee_id,
                "contact_id": contact_id,
                "sent_count": int(sent),
                "received_count": int(received),
                "first_seen": seen,
                "last_seen": seen,
            },
        )


@dataclass(frozen=True)
class _Statements:
    """The dialect's upserts, built once: building one costs more than running it."""

    insert_company: Prepared
    insert_contact: Prepared
    add_owner: Prepared
    bump_relationship: Prepared


@cache
def _statements(dialect: str) -> _Statements:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    earliest, latest = (
        (sa.func.least, sa.func.greatest) if dialect == "postgresql" else (sa.func.min, sa.func.max)
    )
    bump = insert(Relationship)
    table = Relationship.__table__.c
    return _Statements(
        insert_company=Prepared(
            insert(Company).on_conflict_do_nothing(index_elements=["domain"]).returning(Company.id),
            keys=("domain", "name", "created_at"),
        ),
        insert_contact=Prepared(
            insert(Contact)
            .on_conflict_do_nothing(index_elements=["address"])
            .returning(Contact.id),
            keys=(
                "address",
                "name",
                "first_name",
                "last_name",
                "company_id",
                "created_at",
                "updated_at",
            ),
        ),
        add_owner=Prepared(
            insert(MessageOwner)
            .on_conflict_do_nothing(index_elements=["message_id", "employee_id"])
            .returning(MessageOwner.id),  # none for an owner already there
            keys=(
                "message_id",
                "employee_id",
                "channel",
                "created_at",
                "outcome",
                "held_until",
                "decision_id",
            ),
        ),
        bump_relationship=Prepared(
            bump.on_conflict_do_update(
                index_elements=["employee_id", "contact_id"],
                set_={
                    "sent_count": table.sent_count + bump.excluded.sent_count,
                    "received_count": table.received_count + bump.excluded.received_count,
                    "first_seen": earliest(table.first_seen, bump.excluded.first_seen),
                    "last_seen": latest(table.last_seen, bump.excluded.last_seen),
                },
            ),
            keys=(
                "employee_id",
                "contact_id",
                "sent_count",
                "received_count",
                "first_seen",
                "last_seen",
            ),
        ),
    )


_MESSAGE_COLUMNS = (
    "dedupe_key",
    "message_id",
    "content_digest",
    "subject",
    "body_text",
    "sent_at",
    "direction",
    "outcome",
    "visibility",
    "size",
    "held_until",
    "decision_id",
    "created_at",
    "thread_id",
)
_INSERT_MESSAGE = Prepared(sa.insert(Message).returning(Message.id), keys=_MESSAGE_COLUMNS)
_INSERT_PARTICIPANT = Prepared(
    sa.insert(Participant),
    keys=("message_id", "role", "address", "name", "contact_id", "employee_id"),
)
_INSERT_ATTACHMENT = Prepared(
    sa.insert(Attachment), keys=("message_id", "filename", "content_type", "size")
)
_CONTACT = PreparedIn(  # one person writes Jane.Doe@ and jane.doe@: the oldest such contact
    lambda binds: (
        sa.select(Contact.id, Contact.merged_into_id, Contact.name)
        .where(sa.func.lower(Contact.address).in_(binds))  # each of the address's lower_forms
        .order_by(Contact.id)
        .limit(1)
    )
)
_NAME_CONTACT = Prepared(  # a name part the mail does not give stays as guessed (john.doe@)
    sa.update(Contact)
    .where(
        Contact.id == sa.bindparam("contact"),
        Contact.name == "",
        ~sa.exists().where(  # named before, by mail or a person: emptied by a person since
            ContactChange.contact_id == Contact.id, ContactChange.field == "name"
        ),
    )
    .values(
        name=sa.bindparam("name", type_=Contact.name.type),
        first_name=sa.func.coalesce(
            sa.func.nullif(sa.bindparam("first", type_=Contact.first_name.type), ""),
            Contact.first_name,
        ),
        last_name=sa.func.coalesce(
            sa.func.nullif(sa.bindparam("last", type_=Contact.last_name.type), ""),
            Contact.last_name,
        ),
        updated_at=sa.bindparam("now", type_=Contact.updated_at.type),
    )
    .returning(Contact.id)
)
_FILED_CONTACTS = Prepared(  # as _file_participants found them, merges since followed
    sa.select(Participant.address, sa.func.coalesce(Contact.merged_into_id, Contact.id))
    .join(Contact, Contact.id == Participant.contact_id)
    .where(Participant.message_id == sa.bindparam("message_id"))
)
_HELD_PARTICIPANTS = (
    sa.select(Participant.id, Participant.address, Participant.name)
    .where(Participant.message_id == sa.bindparam("message"), Participant.employee_id.is_(None))
    .order_by(Participant.id)
)
_SET_CONTACT = (
    sa.update(Participant)
    .where(Participant.id == sa.bindparam("participant"))
    .values(contact_id=sa.bindparam("contact"))
)
_MESSAGE_BY_KEY = Prepared(
    sa.select(Message.id, Message.body_text, Message.outcome, Message.visibility).where(
        Message.dedupe_key == sa.bindparam("key")
    )
)
# Not prepared: they run only when a capture joins a message kept without text.
_TAKE_TEXT = (
    sa.update(Message)
    .where(Message.id == sa.bindparam("message_row"))
    .values(outcome=Outcome.CAPTURE.value, held_until=None)
)
_OWNER_OUTCOME = sa.select(MessageOwner.outcome).where(
    MessageOwner.message_id == sa.bindparam("message_row"),
    MessageOwner.employee_id == sa.bindparam("employee"),
)
_OWNER_CAPTURES = (
    sa.update(MessageOwner)
    .where(
        MessageOwner.message_id == sa.bindparam("message_row"),
        MessageOwner.employee_id == sa.bindparam("employee"),
    )
    .values(outcome=Outcome.CAPTURE.value, held_until=None, decision_id=sa.bindparam("decision"))
)
_OWNER = Prepared(
    sa.select(MessageOwner.id).where(
        MessageOwner.message_id == sa.bindparam("message_id"),
        MessageOwner.employee_id == sa.bindparam("employee_id"),
    )
)
_EMPLOYEE = PreparedIn(
    lambda binds: sa.union_all(
        sa.select(Employee.email, Employee.id).where(Employee.email.in_(binds)),
        sa.select(EmployeeAlias.address, EmployeeAlias.employee_id).where(
            EmployeeAlias.address.in_(binds)
        ),
    )
)
_FIND = {
    "domain": Prepared(sa.select(Company.id).where(Company.domain == sa.bindparam("value"))),
    "address": Prepared(sa.select(Contact.id).where(Contact.address == sa.bindparam("value"))),
}


def _get_or_create(
    conn: sa.Connection, values: dict[str, Any], unique: str, *, looked: bool = False
) -> int:
    """The id of the company (unique "domain") or contact (unique "address"), made if new.
    `looked`: the caller has just found none, so the insert comes first."""
    find = {"value": values[unique]}
    if not looked:
        found = _FIND[unique].scalar(conn, find)
        if found is not None:
            return int(found)
    statements = _statements(conn.dialect.name)
    insert = statements.insert_company if unique == "domain" else statements.insert_contact
    made = insert.scalar(conn, values)  # none if another writer made it first (PostgreSQL)
    return int(made if made is not None else _FIND[unique].scalar(conn, find))
