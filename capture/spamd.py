"""Receive: ask SpamAssassin's spamd for a score, when one is configured (aiospamc)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiospamc
from aiospamc.header_values import SpamValue

log = logging.getLogger("mailroom.spamd")


@dataclass(frozen=True)
class Spamd:
    host: str
    port: int = 783
    timeout: float = 5.0

    @classmethod
    def configured(cls, host: str | None, port: int) -> Spamd | None:
        """The spamd at host:port, or None where none is configured: the listener and
        explain ask the same one."""
        return cls(host, port) if host else None

    async def score(self, raw: bytes) -> float | None:
        """The spamd score, or None when spamd cannot answer (the message is not held up)."""
        try:
            response = await aiospamc.check(
                raw, host=self.host, port=self.port, timeout=aiospamc.Timeout(total=self.timeout)
            )
        except Exception as error:  # spamd down or slow: decide without its score
            log.warning("spamd gave no score (%s)", type(error).__name__)
            return None
        verdict = response.headers.get("Spam")
        return float(verdict.score) if isinstance(verdict, SpamValue) else None
