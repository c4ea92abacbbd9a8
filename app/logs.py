"""Serve: structured logs (structlog) for `mailroom serve`, as JSON lines or for a console.

Every stdlib logger (ours, uvicorn's, aiosmtpd's) goes through the same formatter. What keeps
message content out: our log calls pass ids, counts and exception *types*, never values;
exception tracebacks are reduced to type and frames (a database error quotes its parameters);
aiosmtpd's protocol log stays at warnings, without the client's words (capture/smtp.py);
SQLAlchemy never logs statements.
"""

from __future__ import annotations

import logging
import sys
import traceback
from enum import StrEnum
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Loggers that would print statements, parameters, protocol lines (imapclient's, at DEBUG,
# hold the mail a sync reads) or (httpx, for each webhook sent) URLs below WARNING; a
# receiver's URL often holds its secret. Alembic's plugins announce themselves at each start.
QUIET = (
    "alembic.runtime.plugins",
    "sqlalchemy",
    "mail.log",
    "imapclient",
    "aiosqlite",
    "psycopg",
    "asyncio",
    "multipart",
    "httpx",
    "httpcore",
)


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def errors_without_values(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """An exception becomes its type and where it was raised; its message (which may quote
    SQL parameters or header values) is left out."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        frames = traceback.extract_tb(exc_info[2])
        event["error"] = exc_info[0].__name__
        event["frames"] = [f"{f.filename}:{f.lineno} in {f.name}" for f in frames[-8:]]
    return event


def configure(
    fmt: LogFormat = LogFormat.CONSOLE, *, level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Route every logger through structlog's formatter, to stderr (or `stream`)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        errors_without_values,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
