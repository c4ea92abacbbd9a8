"""Serve: the FastAPI application, its routers and RFC 9457 error responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.request_limits import BodyLimit, RateLimiter
from app.routes import (
    contacts,
    decisions,
    employees,
    erasure,
    explain,
    health,
    mailboxes,
    me,
    messages,
    people,
    policy,
    review,
    tokens,
    webhooks,
)
from app.runtime import Runtime
from app.web import compliance, pages

PROBLEM = "application/problem+json"


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="Mailroom",
        summary="Business mail into the CRM; personal mail never kept.",
        version="0.1.0",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.runtime = runtime
    app.state.sessions = runtime.sessions
    app.state.read_sessions = runtime.read_sessions
    app.state.rate_limiter = RateLimiter(runtime.settings.api_rate_per_minute)
    app.add_middleware(
        BodyLimit,
        limits={
            "/api/v1/explain": None,  # read as it streams in, up to explain.MAX_MESSAGE_BYTES
            "/api/v1/policy": None,  # likewise, up to policy.MAX_POLICY_BYTES
            "/compliance/simulate": compliance.MAX_FORM_BYTES,
        },
    )
    for router in (
        messages.router,
        people.router,  # before contacts: /contacts/duplicates is not a contact id
        contacts.router,
        policy.router,
        decisions.router,
        explain.router,
        mailboxes.router,
        tokens.router,
        review.router,
        me.router,
        erasure.router,
        webhooks.router,
        employees.router,
    ):
        app.include_router(router, prefix="/api/v1")
    app.include_router(pages.router)
    app.include_router(health.router)
    app.add_exception_handler(StarletteHTTPException, _http_problem)
    app.add_exception_handler(RequestValidationError, _validation_problem)

    return app


def create_operations_app(runtime: Runtime) -> FastAPI:
    """Only /healthz, /readyz and /metrics: for a process that does not serve the API."""
    app = FastAPI(title="Mailroom operations", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.include_router(health.router)
    return app


def _problem(
    status: int,
    title: str,
    detail: Any,
    headers: dict[str, str] | None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body |= extra or {}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


async def _http_problem(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    headers = getattr(error, "headers", None)
    if isinstance(error.detail, dict):  # a title plus extension members, e.g. "problems"
        extra = {k: v for k, v in error.detail.items() if k != "title"}
        title = str(error.detail.get("title", "Error"))
        return _problem(error.status_code, title, None, headers, extra)
    title = error.detail if isinstance(error.detail, str) else "Error"
    return _problem(error.status_code, title, error.detail, headers)


async def _validation_problem(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()]
    return _problem(422, "The request is not valid.", detail, None)
