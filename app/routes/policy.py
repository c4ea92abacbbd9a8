"""Serve: /api/v1/policy, the published policy, its versions and their differences."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from app import policy_versions
from app.models import MAX_ID, PolicyVersion
from app.policy_schemas import (
    DiffOut,
    GuardrailOut,
    PolicyOut,
    RuleChangeOut,
    VersionOut,
    VersionSourceOut,
)
from app.routes.deps import PrincipalDep, SessionDep, allow, read_body
from app.routes.pagination import Id
from app.runtime import active_version, publish_policy
from app.security import Principal, Role
from policies.engine import Engine, PolicyError
from policies.guardrails import GUARDRAILS
from policies.loader import load_policy_text

router = APIRouter(prefix="/policy", tags=["policy"])
Publisher = Annotated[Principal, Depends(allow(Role.COMPLIANCE, Role.ADMIN))]
MAX_POLICY_BYTES = 256 * 1024


def describe(engine: Engine, row: PolicyVersion | None) -> PolicyOut:
    """The policy `engine` applies; `row` is the version in force, if it is stored."""
    return PolicyOut(
        sha256=engine.policy.sha256,
        version=engine.policy.policy.metadata.version,
        version_id=row.id if row and row.sha256 == engine.policy.sha256 else None,
        policy=engine.policy.policy.model_dump(mode="json", by_alias=True),
        guardrails=[
            GuardrailOut(id=g.id, description=g.description, outcome=g.outcome.value)
            for g in GUARDRAILS
        ],
    )


@router.get("", response_model=PolicyOut)
def get_policy(request: Request, session: SessionDep, _principal: PrincipalDep) -> PolicyOut:
    """The policy in force, with its sha256 (cited by every decision) and the guardrails."""
    return describe(request.app.state.runtime.pipeline.engine, active_version(session))


async def policy_body(request: Request) -> bytes:
    return await read_body(request, MAX_POLICY_BYTES)


@router.put("", response_model=PolicyOut, responses={422: {"description": "Invalid policy"}})
def put_policy(
    request: Request,
    session: SessionDep,
    _who: Publisher,
    body: Annotated[bytes, Depends(policy_body)],
) -> PolicyOut:
    """Publish a new version (YAML body). It applies to the next message once stored."""
    # A plain `def`: FastAPI runs it in a worker thread, so that validating a policy never
    # holds up the event loop the SMTP listener and every other request share.
    try:
        engine = load_policy_text(_utf8(body))
    except PolicyError as error:
        raise HTTPException(
            422, {"title": "The policy is not valid.", "problems": error.problems}
        ) from None
    row = publish_policy(session, engine)
    # Built, to its JSON, before the commit: a response that cannot be made changes nothing.
    out = describe(engine, row)
    out.model_dump_json()
    session.commit()
    # Swapped only now that the version is committed: no decision cites an unstored policy.
    request.app.state.runtime.pipeline.engine = engine
    return out


def _utf8(body: bytes) -> str:
    """The policy's text, as `policy check` and `serve` read a file: UTF-8 or refused. Bytes
    replaced would publish other text than was sent, under a sha256 no copy of it matches."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyError([f"not UTF-8: byte {error.start} cannot be read"]) from None


@router.get("/versions", response_model=list[VersionOut])
def list_versions(session: SessionDep, _principal: PrincipalDep) -> list[VersionOut]:
    """Every version ever published, newest first."""
    current = active_version(session)
    return [_version(v, current) for v in policy_versions.versions(session)]


@router.get("/versions/{version_id}", response_model=VersionSourceOut)
def get_version(session: SessionDep, _principal: PrincipalDep, version_id: Id) -> VersionSourceOut:
    row = _found(session, version_id)
    return VersionSourceOut(
        **_version(row, active_version(session)).model_dump(), source=row.source
    )


@router.get("/diff", response_model=DiffOut)
def diff_versions(
    session: SessionDep,
    _principal: PrincipalDep,
    from_id: Annotated[int, Query(alias="from", ge=1, le=MAX_ID)],
    to_id: Annotated[int, Query(alias="to", ge=1, le=MAX_ID)],
) -> DiffOut:
    """What changed between two versions: rules added, removed, changed, and the text diff."""
    result = policy_versions.diff(_found(session, from_id), _found(session, to_id))
    return DiffOut(
        from_id=from_id,
        to_id=to_id,
        added=list(result.added),
        removed=list(result.removed),
        changed=[RuleChangeOut(id=c.id, fields=list(c.fields)) for c in result.changed],
        reordered=result.reordered,
        unified=result.unified,
    )


def _found(session: SessionDep, version_id: Id) -> PolicyVersion:
    row = policy_versions.version(session, version_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such policy version.")
    return row


def _version(row: PolicyVersion, current: PolicyVersion | None) -> VersionOut:
    return VersionOut(
        id=row.id,
        sha256=row.sha256,
        name=row.name,
        version=row.version,
        created_at=row.created_at,
        activated_at=row.activated_at,
        active=current is not None and current.id == row.id,
    )
