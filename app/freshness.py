"""File: keeping contacts alive: titles and phones from signatures, bounces, likely job moves.

Every change is written to `contact_changes` with the message (and its date) that showed it,
so that a contact's history says where each value came from."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app import webhooks
from app.db import lower_forms
from app.models import Contact, ContactChange
from app.prepared import Prepared, PreparedIn
from capture.parse import ParsedMessage
from capture.people import Person, is_role_name
from capture.signatures import extract_signature, region_for_domain

SIGNED_FIELDS = ("title", "phone", "organization")

_CHANGE = Prepared(
    sa.insert(ContactChange),
    keys=(
        "contact_id",
        "field",
        "old_value",
        "new_value",
        "message_id",
        "observed_at",
        "created_at",
    ),
)
_SIGNED = Prepared(
    sa.select(Contact.title, Contact.phone, Contact.organization, Contact.signature_at).where(
        Contact.id == sa.bindparam("contact")
    )
)
_NAME = Prepared(
    sa.select(Contact.first_name + " " + Contact.last_name).where(
        Contact.id == sa.bindparam("contact")
    )
)
_NAMESAKES = Prepared(
    sa.select(Contact.id, Contact.address)
    .where(
        # Both sides folded by the database, as the index on lower() is: SQLite's folds ASCII
        # alone, so a name lower-cased by Python ('élodie') never met its own ('Élodie').
        sa.func.lower(Contact.first_name) == sa.func.lower(sa.bindparam("first")),
        sa.func.lower(Contact.last_name) == sa.func.lower(sa.bindparam("last")),
        Contact.company_id.is_not(None),
        Contact.company_id != sa.bindparam("company"),
        Contact.merged_into_id.is_(None),
        Contact.id != sa.bindparam("contact"),
    )
    .order_by(Contact.id.desc())
    .limit(3)
)
_UNDELIVERABLE = PreparedIn(  # binds: the addresses' lower_forms, as filing finds a contact
    lambda binds: sa.select(Contact.id).where(
        sa.func.lower(Contact.address).in_(binds), Contact.undeliverable_since.is_(None)
    )
)


def _update(**values: Any) -> Prepared:
    return Prepared(
        sa.update(Contact).where(Contact.id == sa.bindparam("contact")).values(**values)
    )


def _bind(name: str, column: Any) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


_SET_SIGNED = {
    field: _update(
        **{field: _bind("value", getattr(Contact, field))},
        signature_at=_bind("signed", Contact.signature_at),
        updated_at=_bind("now", Contact.updated_at),
    )
    for field in SIGNED_FIELDS
}
_SET_SIGNATURE_AT = _update(signature_at=_bind("signed", Contact.signature_at))
_SET_UNDELIVERABLE = _update(
    undeliverable_since=_bind("since", Contact.undeliverable_since),
    updated_at=_bind("now", Contact.updated_at),
)


def change(
    conn: sa.Connection,
    contact: int,
    field: str,
    old: str,
    new: str,
    *,
    message: int | None,
    observed: datetime,
    now: datetime,
) -> None:
    _CHANGE.run(
        conn,
        {
            "contact_id": contact,
            "field": field,
            "old_value": old[:320],
            "new_value": new[:320],
            "message_id": message,
            "observed_at": observed,
            "created_at": now,
        },
    )


def read_signature(
    conn: sa.Connection,
    message: ParsedMessage,
    contacts: dict[str, int],
    *,
    message_row: int,
    now: datetime,
) -> None:
    """The sender's newest signature updates their title, phone and organization; an older
    message than the signature read last changes nothing, and neither does a signature in
    another's name (an assistant writing for the sender, a colleague's card)."""
    if message.sender is None:
        return
    contact = contacts.get(message.sender.address)
    if contact is None:
        return
    # A sender without a display name is known by the contact's name (from first.last@).
    name = message.sender.name or _NAME.scalar(conn, {"contact": contact}) or ""
    # A number written without its country code is read as the sender's country's.
    region = region_for_domain(message.sender.domain)
    found = extract_signature(message.text, sender_name=name, region=region)
    if found is None or not found.matches_sender:
        return
    signed = message.date or now
    current = _SIGNED.first(conn, {"contact": contact})
    if current is None or (current[3] is not None and signed < current[3]):
        return
    voice = [p.number for p in found.phones if p.kind != "fax"]
    values = {
        "title": found.title.value if found.title else "",
        "phone": voice[0] if voice else "",
        "organization": found.company.value if found.company else "",
    }
    updated = False
    for index, field in enumerate(SIGNED_FIELDS):
        new, old = (values[field] or "")[:200], current[index] or ""
        if new and new != old:
            _SET_SIGNED[field].run(
                conn, {"contact": contact, "value": new, "signed": signed, "now": now}
            )
            change(conn, contact, field, old, new, message=message_row, observed=signed, now=now)
            updated = True
    _SET_SIGNATURE_AT.run(conn, {"contact": contact, "signed": signed})
    if updated:
        webhooks.emit(conn, "contact.updated", {"contact_id": contact}, now)


def note_job_move(
    conn: sa.Connection, contact: int, found: Person, company: int | None, now: datetime
) -> None:
    """A new contact with the name of one at another company is flagged as a likely job
    move (on both), never merged silently: `GET /api/v1/contacts/duplicates` lists it."""
    if company is None or not found.first or not found.last or found.name_from_address:
        return
    if is_role_name(f"{found.first} {found.last}"):  # "Accounts Payable" at two customers
        return
    namesakes = _NAMESAKES.rows(
        conn,
        {
            "first": found.first,
            "last": found.last,
            "company": company,
            "contact": contact,
        },
    )
    for _other, address in namesakes:
        change(
            conn,
            contact,
            "likely-job-move",
            address,
            found.address,
            message=None,
            observed=now,
            now=now,
        )


def mark_undeliverable(
    conn: sa.Connection, addresses: Iterable[str], *, when: datetime, now: datetime
) -> int:
    """Existing contacts a bounce names (in any case) are marked undeliverable from its
    date; a bounce never creates a contact. Returns how many were marked."""
    marked = 0
    forms = sorted({form for address in addresses for form in lower_forms(address)})
    for (contact,) in _UNDELIVERABLE.rows(conn, forms):
        _SET_UNDELIVERABLE.run(conn, {"contact": contact, "since": when, "now": now})
        change(
            conn,
            contact,
            "deliverability",
            "",
            "undeliverable",
            message=None,
            observed=when,
            now=now,
        )
        webhooks.emit(conn, "contact.updated", {"contact_id": contact}, now)
        marked += 1
    return marked
