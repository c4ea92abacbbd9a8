"""Receive: the aiosmtpd handler; 250 only once the pipeline's transaction has committed."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from capture.pipeline import Envelope as PipelineEnvelope
from capture.pipeline import Pipeline
from policies.model import Channel, Outcome

log = logging.getLogger("mailroom.smtp")

BANNER = "Mailroom ESMTP"
MAX_RECIPIENTS = 20


class CaptureHandler:
    """aiosmtpd handler: accepts mail for the capture addresses and runs the pipeline."""

    def __init__(
        self, pipeline: Pipeline, executor: Executor, *, capture_addresses: frozenset[str]
    ) -> None:
        self.pipeline = pipeline
        self.executor = executor
        self.capture_addresses = capture_addresses

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.strip().lower() not in self.capture_addresses:
            return "550 5.1.1 Recipient is not a Mailroom capture address"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content
        if not isinstance(raw, bytes):
            return "451 4.3.0 Message content unavailable, try again later"
        submitted = PipelineEnvelope(
            mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos)
        )
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            self.executor, self.pipeline.process, raw, submitted, Channel.BCC
        )
        try:
            # Shielded: a client that hangs up cannot cancel a half-done commit.
            result = await asyncio.shield(work)
        except Exception as error:
            # Only the type: database errors quote their parameters, which hold message content.
            log.error(
                "pipeline failed (%s); answered 451 so the sender retries", type(error).__name__
            )
            return "451 4.3.0 Local error while saving the message, try again later"
        if result.outcome is Outcome.REJECT:
            return "550 5.7.1 Submitter is not an employee of this organization"
        return f"250 2.0.0 Accepted, decision {result.decision_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s", type(error).__name__)
        return "451 4.3.0 Local error, try again later"


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def quiet_protocol_log() -> None:
    """aiosmtpd logs protocol lines, message lines included, at INFO and DEBUG: keep them out.

    A filter rather than a level, so that raising the root log level cannot let them back in.
    """
    protocol_log = logging.getLogger("mail.log")
    if not any(isinstance(f, _WarningsOnly) for f in protocol_log.filters):
        protocol_log.addFilter(_WarningsOnly())


def smtp_factory(handler: CaptureHandler, *, hostname: str, size_limit: int) -> Any:
    """A protocol factory for loop.create_server: one SMTP instance per connection."""

    quiet_protocol_log()

    def build() -> SMTP:
        return SMTP(
            handler,
            hostname=hostname,
            ident=BANNER,
            data_size_limit=size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
        )

    return build
