"""Serve: data-subject rights for compliance: objection, erasure and access export."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy.orm import Session

from app import rights
from app.access_schemas import AddressIn, ExportOut, ReceiptOut
from app.db import scrub_wal, transaction
from app.routes.deps import ComplianceDep, SessionDep
from app.routes.pagination import Id
from policies.observe import is_internal

router = APIRouter(tags=["data-subject rights"])
EXPORT_NOTE = (
    "Message text and subjects are not part of this export: only the messages' owners may read "
    "them. Each listed message can be provided by its owners on request."
)


def _request(request: Request) -> rights.Request:
    runtime = request.app.state.runtime
    return rights.Request(
        secret=runtime.pipeline.secret,
        org_domains=frozenset(runtime.settings.org_domains),
        policy_sha256=runtime.pipeline.engine.policy.sha256,
        now=datetime.now(UTC),
    )


def _external(session: Session, address: str, at: rights.Request) -> str:
    """The address, unless it is ours: suppressing an employee's (at any domain) would drop
    every message they send."""
    if is_internal(address.lower(), at.org_domains) or rights.is_employee(session, address):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "That is an organization address: employees are not contacts.",
        )
    return address


def _receipt(
    action: str,
    done: rights.Outcome,
    now: datetime,
    *,
    suppressed: bool,
    wal_truncated: bool | None,
) -> ReceiptOut:
    return ReceiptOut(
        action=action,
        ledger_record=done.record.id,
        ledger_hash=done.record.hash,
        at=now,
        contact_found=done.contact_found,
        messages_removed=done.messages_removed,
        participations_removed=done.participations_removed,
        held_removed=done.held_removed,
        suppressed=suppressed,
        wal_truncated=wal_truncated,
    )


@router.post("/erasures", response_model=ReceiptOut, status_code=status.HTTP_201_CREATED)
def post_erasure(
    request: Request, session: SessionDep, _officer: ComplianceDep, body: AddressIn
) -> ReceiptOut:
    """Erase everything held about an address and keep it from ever being captured again.
    The receipt names the ledger record that proves it."""
    at = _request(request)
    done = rights.erase(session, _external(session, body.address, at), at)
    session.commit()
    scrubbed = scrub_wal(request.app.state.runtime.db)
    return _receipt("erasure", done, at.now, suppressed=True, wal_truncated=scrubbed)


@router.post("/objections", response_model=ReceiptOut, status_code=status.HTTP_201_CREATED)
def post_objection(
    request: Request, session: SessionDep, _officer: ComplianceDep, body: AddressIn
) -> ReceiptOut:
    """Record an objection: future mail with this address is dropped by the guardrail."""
    at = _request(request)
    done = rights.object_to(session, _external(session, body.address, at), at)
    session.commit()
    scrubbed = scrub_wal(request.app.state.runtime.db)
    return _receipt("objection", done, at.now, suppressed=True, wal_truncated=scrubbed)


@router.post(
    "/contacts/{contact_id}/objection",
    response_model=ReceiptOut,
    status_code=status.HTTP_201_CREATED,
)
def post_contact_objection(
    request: Request, session: SessionDep, _officer: ComplianceDep, contact_id: Id
) -> ReceiptOut:
    """An objection by a known contact."""
    address = rights.contact_address(session, contact_id)
    if address is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such contact.")
    at = _request(request)
    done = rights.object_to(session, _external(session, address, at), at)
    session.commit()
    scrubbed = scrub_wal(request.app.state.runtime.db)
    return _receipt("objection", done, at.now, suppressed=True, wal_truncated=scrubbed)


@router.get("/contacts/{contact_id}/export", response_model=ExportOut)
def get_export(
    request: Request, session: SessionDep, _officer: ComplianceDep, contact_id: Id
) -> ExportOut:
    """Everything held about a contact (Art. 15), as JSON; the export is logged."""
    at = _request(request)
    found = rights.export(session, contact_id, at)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such contact.")
    # A GET reads without the write lock; the log entry is a short write of its own.
    with transaction(request.app.state.sessions) as writer:
        rights.log_export(writer, contact_id, at)
    return ExportOut(**found, note=EXPORT_NOTE, exported_at=at.now)
