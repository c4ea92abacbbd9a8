"""Serve: the pages' templates, their shared context, and the one stylesheet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from app.routes.deps import get_session
from app.web.auth import WebUser

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)

# Committed when the route returns, before the response leaves: after a form's redirect, the
# next page always sees the change.
PageSession = Annotated[Session, Depends(get_session, scope="function")]


def page(
    request: Request, name: str, user: WebUser, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """A signed-in page: every form on it gets the session's CSRF token."""
    full = {"user": user, "csrf": user.csrf, "note": request.query_params.get("note"), **context}
    return templates.TemplateResponse(request, name, full, status_code=status_code)


@router.get("/web.css")
def stylesheet() -> FileResponse:
    return FileResponse(HERE / "static" / "web.css", media_type="text/css")
