"""Serve: the pages people read; first of all the published policy, open to everyone inside."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse

from app import policy_versions
from app.models import MAX_ID
from app.routes.deps import SessionDep
from app.routes.pagination import Id
from app.web import admin, compliance, mail, render, signin
from app.web.render import PageRoute, public_page
from policies.guardrails import GUARDRAILS
from policies.model import Outcome

router = APIRouter(include_in_schema=False, route_class=PageRoute)
for pages in (render.router, signin.router, mail.router, compliance.router, admin.router):
    router.include_router(pages)

IN_PLAIN_WORDS = {
    Outcome.CAPTURE: "kept in the CRM (text and who wrote to whom)",
    Outcome.METADATA_ONLY: "only who wrote to whom, and when, is kept; no subject, no text",
    Outcome.HOLD_FOR_REVIEW: "held for your own review; kept only if you say it is business",
    Outcome.DROP: "not kept: only a record that a decision was made, with no content",
    Outcome.REJECT: "refused; nothing is kept",
}


@router.get("/policy", response_class=HTMLResponse)
def policy_page(request: Request, session: SessionDep) -> HTMLResponse:
    """The policy in force, in the order it is applied, for everyone in the company."""
    engine = request.app.state.runtime.pipeline.engine
    return public_page(
        request,
        "policy.html",
        {
            "loaded": engine.policy,
            "policy": engine.policy.policy,
            "guardrails": GUARDRAILS,
            "words": IN_PLAIN_WORDS,
            "versions": policy_versions.versions(session),
        },
    )


@router.get("/policy/versions/{version_id}", response_class=HTMLResponse)
def version_page(request: Request, session: SessionDep, version_id: Id) -> HTMLResponse:
    row = policy_versions.version(session, version_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such policy version.")
    return public_page(request, "version.html", {"version": row})


@router.get("/policy/diff", response_class=HTMLResponse)
def diff_page(
    request: Request,
    session: SessionDep,
    from_id: Annotated[int, Query(alias="from", ge=1, le=MAX_ID)],
    to_id: Annotated[int, Query(alias="to", ge=1, le=MAX_ID)],
) -> HTMLResponse:
    old, new = policy_versions.version(session, from_id), policy_versions.version(session, to_id)
    if old is None or new is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such policy version.")
    return public_page(
        request,
        "diff.html",
        {
            "old": old,
            "new": new,
            "diff": policy_versions.diff(old, new),
        },
    )
