"""Serve: the compliance officer's pages: the decision log, never the mail itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from app import ledger, policy_versions
from app.web import reports
from app.web.auth import ComplianceUser, CsrfChecked, WebUser
from app.web.render import PageRoute, PageSession, page
from policies.engine import PolicyError
from policies.loader import load_policy_text

router = APIRouter(include_in_schema=False, route_class=PageRoute)
MAX_POLICY_CHARS = 200_000
# The form that pastes one: each character is at most 4 bytes of UTF-8, each sent as %XX.
MAX_FORM_BYTES = 12 * MAX_POLICY_CHARS


def _dashboard(
    request: Request, session: Session, user: WebUser, extra: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    activity = reports.activity(session, datetime.now(UTC))
    in_force = request.app.state.runtime.pipeline.engine.policy
    versions = policy_versions.versions(session)
    context = {
        "chart": reports.chart(activity),
        "colours": reports.COLOURS,
        "per_rule": reports.per_rule(activity, in_force, versions),
        "consistency": reports.consistency(session),
        "decisions": reports.recent_decisions(session),
        "versions": versions,
        "in_force": in_force.sha256,
        "verification": None,
        "simulation": None,
        "candidate": "",
        "problems": [],
        **extra,
    }
    return page(request, "compliance.html", user, context, status_code=status_code)


@router.get("/compliance", response_class=HTMLResponse)
def dashboard(request: Request, session: PageSession, user: ComplianceUser) -> HTMLResponse:
    return _dashboard(request, session, user, {})


@router.get("/compliance/ledger", response_class=HTMLResponse)
def verify_ledger(request: Request, session: PageSession, user: ComplianceUser) -> HTMLResponse:
    """Walk the hash chain now (a read: verifying changes nothing, so it is a GET)."""
    return _dashboard(request, session, user, {"verification": ledger.verify(session)})


@router.post("/compliance/simulate", response_class=HTMLResponse, dependencies=[CsrfChecked])
def simulate(
    request: Request,
    user: ComplianceUser,
    candidate: Annotated[str, Form(max_length=MAX_POLICY_CHARS)],
) -> HTMLResponse:
    """Re-decide past decisions under a pasted candidate policy; nothing is stored, so it
    reads in a reading session and never holds up the listener's writes."""
    extra: dict[str, Any] = {"candidate": candidate}
    with request.app.state.read_sessions() as session:
        try:
            engine = load_policy_text(candidate)
        except PolicyError as error:
            extra["problems"] = error.problems
            return _dashboard(request, session, user, extra, status_code=422)
        secret = request.app.state.runtime.pipeline.secret
        result = policy_versions.simulate(session, engine, secret)
        extra["simulation"] = result
        extra["transitions"] = sorted(result.transitions.items(), key=lambda item: -item[1])
        return _dashboard(request, session, user, extra)
