"""Serve: two limits on the API's connections that uvicorn lacks. A client has so long to send
a whole request, from connecting or from its previous answer; and a process holds so many API
connections, refusing more with 503. Without them a connection that sent nothing, or part of
a request, stayed open for good: a few thousand of those took the file descriptors the SMTP
listener and the database need (the SMTP listener has its own limits, capture/smtp.py)."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)
_AWAITING_REQUEST = (h11.IDLE, h11.SEND_BODY)  # the client's side, while we wait on it


def limited_protocol(request_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with these limits."""

    class Limited(_Limited):
        timeout = request_timeout
        most = max_connections

    return Limited


class _Limited(H11Protocol):
    timeout: float
    most: int
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.most:
            transport.write(REFUSED)
            transport.close()
            return
        self._await_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_request()  # a kept-alive connection's next request has as long

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.timeout, self._overdue)

    def _overdue(self) -> None:
        """Close a connection whose request is still not all here; one being answered stays.
        A route waiting on the rest of its body sees the client gone and ends."""
        if self.conn.their_state in _AWAITING_REQUEST and not self.transport.is_closing():
            self.transport.close()
