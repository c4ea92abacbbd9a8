"""Serve: contacts that look like one person, and merging them without losing history."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import ledger, webhooks
from app.crm import CAPTURED_OUTCOMES, contacts_by_id, lower
from app.models import Contact, ContactChange, Message, MessageOwner, Participant, Relationship
from app.schemas import ContactOut, DuplicateOut

MAX_GROUPS = 100


class MergeRefusedError(ValueError):
    """The merge asked for cannot be done; the message says why."""


def find_duplicates(session: Session) -> list[DuplicateOut]:
    """Same address in another case, or same name at the same company: `same-person`.
    Same name at another company, noted when the second appeared: `likely-job-move`."""
    live = Contact.merged_into_id.is_(None)
    groups: list[tuple[str, list[int]]] = []
    address = lower(session, Contact.address)  # `Émile@` and `émile@` on SQLite too
    by_address = (
        sa.select(address).where(live).group_by(address).having(sa.func.count() > 1)
    ).limit(MAX_GROUPS)
    shared = list(session.scalars(by_address))
    same: dict[str, list[int]] = {written: [] for written in shared}
    for written, contact in session.execute(
        sa.select(address, Contact.id).where(live, address.in_(shared)).order_by(Contact.id)
    ):
        same[written].append(contact)
    groups.extend(("same-person", ids) for ids in same.values())
    first, last = sa.func.lower(Contact.first_name), sa.func.lower(Contact.last_name)
    by_name = (
        sa.select(first, last, Contact.company_id)
        .where(live, Contact.first_name != "", Contact.last_name != "")
        .where(Contact.company_id.is_not(None))
        .group_by(first, last, Contact.company_id)
        .having(sa.func.count() > 1)
        .limit(MAX_GROUPS)
    )
    for given, family, company in session.execute(by_name):
        ids = session.scalars(
            sa.select(Contact.id).where(
                live, first == given, last == family, Contact.company_id == company
            )
        )
        groups.append(("same-person", list(ids)))
    moves = session.execute(
        sa.select(ContactChange.contact_id, Contact.id)
        .join(Contact, Contact.address == ContactChange.old_value)
        .where(ContactChange.field == "likely-job-move", live)
        .limit(MAX_GROUPS)
    )
    groups.extend(("likely-job-move", [older, newer]) for newer, older in moves)
    return [_group(session, reason, ids) for reason, ids in groups if len(set(ids)) > 1]


def _group(session: Session, reason: str, ids: list[int]) -> DuplicateOut:
    found = sorted(contacts_by_id(session, ids), key=lambda c: c.id)
    return DuplicateOut(reason=reason, contacts=found)


def merge(session: Session, source_id: int, into_id: int, now: datetime) -> ContactOut:
    """Fold `source` into `into`: its messages, relationships and history move over, empty
    fields are filled from it, and its address keeps pointing at `into` for future mail.
    Each contact changed is announced (`contact.updated`)."""
    # The log's lock first, as filing holds it until its batch commits (PostgreSQL): what
    # this reads of the contacts' mail then includes all a batch files for them.
    ledger.wait_for_appends(session)
    source, into = session.get(Contact, source_id), session.get(Contact, into_id)
    if source is None or into is None:
        raise LookupError("No such contact.")
    if source.id == into.id or source.merged_into_id or into.merged_into_id:
        raise MergeRefusedError("Both contacts must exist, differ and not be merged already.")
    twice = _counted_twice(session, source.id, into.id)  # before their participants are one
    session.execute(
        sa.update(Participant).where(Participant.contact_id == source.id).values(contact_id=into.id)
    )
    _merge_relationships(session, source.id, into.id, twice)
    session.execute(
        sa.update(ContactChange)
        .where(ContactChange.contact_id == source.id)
        .values(contact_id=into.id)
    )
    repointed = session.scalars(
        sa.update(Contact)
        .where(Contact.merged_into_id == source.id)
        .values(merged_into_id=into.id, updated_at=now)
        .returning(Contact.id)
    ).all()
    for field in ("name", "first_name", "last_name", "title", "phone", "organization"):
        if not getattr(into, field) and getattr(source, field):
            setattr(into, field, getattr(source, field))
    into.company_id = into.company_id or source.company_id
    into.updated_at = now
    source.merged_into_id = into.id
    source.updated_at = now
    session.add(
        ContactChange(
            contact_id=into.id,
            field="merged",
            old_value=source.address,
            new_value=into.address,
            observed_at=now,
            created_at=now,
        )
    )
    session.flush()
    # Every contact changed here, as a rename would be: integrations mirror them by events.
    for changed in (into.id, source.id, *repointed):
        webhooks.emit(session, "contact.updated", {"contact_id": changed}, now)
    return contacts_by_id(session, [into.id])[0]


def _counted_twice(session: Session, source: int, into: int) -> dict[int, int]:
    """By employee, the kept mail they sent that names both contacts: it counted once for
    each of them, and is to count once for the one person (app.filing.count_exchange). Mail
    one of them sent names the other, who did not write it: it counted for the writer alone."""
    names = [
        sa.exists().where(Participant.message_id == Message.id, Participant.contact_id == contact)
        for contact in (source, into)
    ]
    sent_by_owner = sa.exists().where(
        Participant.message_id == Message.id,
        Participant.role == "from",
        Participant.employee_id == MessageOwner.employee_id,
    )
    rows = session.execute(  # the owners' own kept copies: one waiting for review counted none
        sa.select(MessageOwner.employee_id, sa.func.count())
        .join(Message, Message.id == MessageOwner.message_id)
        .where(MessageOwner.outcome.in_(CAPTURED_OUTCOMES), *names, sent_by_owner)
        .group_by(MessageOwner.employee_id)
    )
    return {employee: count for employee, count in rows}


def _merge_relationships(session: Session, source: int, into: int, twice: dict[int, int]) -> None:
    theirs = session.scalars(sa.select(Relationship).where(Relationship.contact_id == source))
    ours = {
        r.employee_id: r
        for r in session.scalars(sa.select(Relationship).where(Relationship.contact_id == into))
    }
    for moving in theirs.all():
        kept = ours.get(moving.employee_id)
        if kept is None:
            moving.contact_id = into
            continue
        kept.sent_count += moving.sent_count - twice.get(moving.employee_id, 0)
        kept.received_count += moving.received_count
        kept.first_seen = min(kept.first_seen, moving.first_seen)
        kept.last_seen = max(kept.last_seen, moving.last_seen)
        session.delete(moving)
