"""Serve: /api/v1/decisions, the content-free decision log, for compliance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app import ledger
from app.policy_schemas import VerificationOut
from app.routes.deps import SessionDep, allow
from app.security import Principal, Role

router = APIRouter(prefix="/decisions", tags=["decisions"])
Auditor = Annotated[Principal, Depends(allow(Role.COMPLIANCE, Role.ADMIN))]


@router.get("/verify", response_model=VerificationOut)
def verify(session: SessionDep, _auditor: Auditor) -> VerificationOut:
    """Walk the hash chain; name the first record that was altered or removed."""
    result = ledger.verify(session)
    return VerificationOut(
        ok=result.ok,
        checked=result.checked,
        first_broken=result.first_broken,
        problem=result.problem,
    )
