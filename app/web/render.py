"""Serve: the pages' templates, their shared context, and the one stylesheet."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from app.routes.deps import get_session
from app.web.auth import WebUser
from policies.guardrails import GUARDRAILS

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
GUARDRAIL_IDS = frozenset(g.id for g in GUARDRAILS)
NO_RULE = "policy default"  # how the pages name a decision no rule made: the default outcome


def policy_anchor(rule: str) -> str:
    """Where /policy explains what decided a message: a guardrail, a rule, or the default."""
    if rule == NO_RULE:
        return "default-outcome"
    return f"guardrail-{rule}" if rule in GUARDRAIL_IDS else f"rule-{rule}"


templates.env.globals["policy_anchor"] = policy_anchor

# Committed when the route returns, before the response leaves: after a form's redirect, the
# next page always sees the change.
PageSession = Annotated[Session, Depends(get_session, scope="function")]


# What a form did, shown on the page it returns to. Only these fixed sentences can appear, so a
# crafted link cannot put words of its own on a Mailroom page.
NOTES = {
    "visibility": "Visibility changed.",
    "captured": "Captured: it is now in the CRM, with its contacts.",
    "discarded": "Discarded: the message is gone; only a content-free decision remains.",
    "not-held": (
        "That message is no longer waiting for your review: it was captured or discarded "
        "already, or its review period ended."
    ),
    "paused": "Capture paused: nothing you send or receive is kept until you resume.",
    "resumed": "Capture resumed.",
    "personal-added": "Added to your personal contacts: mail with them is never captured.",
    "personal-invalid": "That is not an email address; nothing was added.",
    "personal-removed": "Removed from your personal contacts.",
    "employee-added": "Employee added.",
    "employee-exists": "Already an employee; nothing was changed.",
    "employee-invalid": "That is not an email address; nothing was added.",
    "token-revoked": "Token revoked: it no longer works, and its signed-in pages are closed.",
    "mailbox-paused": "Mailbox paused: its sync ends within half a minute; nothing is forgotten.",
    "mailbox-resumed": "Mailbox resumed: its sync starts within half a minute, where it stood.",
    "mailbox-removed": (
        "Mailbox removed: its password is forgotten and its sync ends within half a minute. "
        "The mail it filed stays."
    ),
}
# Pages load nothing but their own stylesheet, and no other site may frame them.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def harden(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def page(
    request: Request, name: str, user: WebUser, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """A signed-in page: every form on it gets the session's CSRF token. Kept by no cache:
    it may show mail, which must not stay in a shared proxy, or in a browser's history
    for the next person at the machine after sign-out."""
    note = NOTES.get(request.query_params.get("note", ""))
    full = {"user": user, "csrf": user.csrf, "note": note, **context}
    response = harden(templates.TemplateResponse(request, name, full, status_code=status_code))
    response.headers["Cache-Control"] = "no-store"
    return response


def public_page(request: Request, name: str, context: dict[str, Any]) -> HTMLResponse:
    """A page anyone inside may read (the policy and its versions), hardened alike."""
    return harden(templates.TemplateResponse(request, name, context))


def problem_page(request: Request, status_code: int, detail: str) -> HTMLResponse:
    """What went wrong, as a page: the person reading it is in a browser, not an API client."""
    context = {"user": None, "note": None, "title": HTTPStatus(status_code).phrase}
    page = templates.TemplateResponse(
        request, "problem.html", context | {"detail": detail}, status_code=status_code
    )
    response = harden(page)
    response.headers["Cache-Control"] = "no-store"
    return response


class PageRoute(APIRoute):
    """A page's route: a refusal (a form sent twice, a stale CSRF token, a wrong role, an id
    that is no one's) is answered with a page of the same status, not the API's JSON
    problem; a redirect (to sign in first) stays a redirect."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as error:
                if error.status_code < 400:
                    raise
                detail = error.detail if isinstance(error.detail, str) else "Not done."
                return problem_page(request, error.status_code, detail)
            except RequestValidationError as error:
                fields = sorted({str(e["loc"][-1]) for e in error.errors()})  # never the input
                return problem_page(request, 422, f"Not valid: {', '.join(fields)}.")

        return answer


router = APIRouter(include_in_schema=False, route_class=PageRoute)


@router.get("/web.css")
def stylesheet() -> FileResponse:
    return FileResponse(HERE / "static" / "web.css", media_type="text/css")
