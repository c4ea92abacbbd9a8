"""Serve: /healthz (the process answers), /readyz (it can do its work) and /metrics."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.metrics import CONTENT_TYPE
from app.runtime import Runtime

router = APIRouter(tags=["operations"])

# What the running service reports about its listeners: name -> bound and serving.
ListenerCheck = Callable[[], dict[str, bool]]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Alive: the process answers HTTP. Restart it when this fails."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready: the database answers and every listener of this process is bound. Send it no
    traffic while this fails (503)."""
    runtime: Runtime = request.app.state.runtime
    listeners: ListenerCheck = getattr(request.app.state, "listeners", dict)
    checks = {"database": database_reachable(runtime.db), **listeners()}
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text exposition of this process's metrics."""
    runtime: Runtime = request.app.state.runtime
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)


def database_reachable(db: sa.Engine) -> bool:
    try:  # as a reader: a SQLite writer's lock, held for a long purge, must not hold it up
        with db.execution_options(writer=False).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception:  # any failure means not ready; the reason is in the database's own log
        return False
    return True
