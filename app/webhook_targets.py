"""Record: where webhooks may be sent: public addresses, and the networks an operator allows.

A delivery's status code is readable back from its log, so a webhook aimed at this host or its
network would be a way to probe them (SSRF). Each URL is checked when it is subscribed and
again as each delivery connects, to the very address checked: what a name resolves to can
change in between, and from one lookup to the next (DNS rebinding). And for how long: a
delivery ends at its deadline, however the receiver paces its answer.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED = (
    "The webhook URL's host must resolve, and only to public addresses: not loopback, "
    "private, link-local, reserved, multicast or unspecified ones."
)


def resolve(host: str) -> list[Address]:
    """Every address `host` resolves to (itself, for an IP literal); none when it does not."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found]


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address.is_site_local:
            return False
    special = (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )
    return address.is_global and not special


class RefusedAddressError(Exception):
    """The host no longer resolves, or not to allowed addresses only: nothing was sent."""


def allowed_addresses(host: str, allowed: Sequence[Network] = ()) -> list[Address]:
    """What `host` resolves to, if every address is public or in one of the `allowed`
    networks (MAILROOM_WEBHOOK_ALLOW_NETWORKS); none otherwise."""
    addresses = resolve(host)
    if all(is_public(a) or any(a in network for network in allowed) for a in addresses):
        return addresses
    return []


def may_send_to(url: str, allowed: Sequence[Network] = ()) -> bool:
    """Whether the URL's host resolves, and only to addresses webhooks may reach."""
    host = urlsplit(url).hostname
    return bool(host and allowed_addresses(host, allowed))


_DEADLINE: ContextVar[float | None] = ContextVar("webhook_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every wait of the requests made within ends `seconds` from now: a timeout alone bounds
    each wait, and a receiver sending a byte now and then never lets one run out."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _left(timeout: float | None) -> float | None:
    end = _DEADLINE.get()
    if end is None:
        return timeout
    left = max(end - time.monotonic(), 0.001)  # not 0, which makes a socket non-blocking
    return left if timeout is None else min(timeout, left)


class _Bounded(httpcore.NetworkStream):
    """A connection whose every wait ends by the deadline of the request it serves."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self.stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, _left(timeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Bounded(self.stream.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class _CheckedBackend(httpcore.SyncBackend):
    """Connects only to an address it has just checked, never resolving the name again:
    another lookup could answer otherwise (a rebinding name server, TTL 0)."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        self.allowed = tuple(allowed)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = allowed_addresses(host, self.allowed)
        if not addresses:
            raise RefusedAddressError(host)
        failed = httpcore.ConnectError(host)
        for address in addresses:  # in turn, as socket.create_connection does
            try:
                connected = super().connect_tcp(
                    str(address), port, _left(timeout), local_address, socket_options
                )
                return _Bounded(connected)
            except httpcore.ConnectError as error:
                failed = error
        raise failed


@cache
def _tls() -> ssl.SSLContext:
    """The client side of TLS, with the certificate store read (some 50 ms, on the event
    loop of a process that starts): once a process, shared by its clients, as a context may
    be."""
    return httpx.create_ssl_context(trust_env=False)


def client(allowed: Sequence[Network] = ()) -> httpx.Client:
    """An HTTP client that reaches only public addresses and the `allowed` networks, checked
    as it connects (TLS still verifies the name the URL gives), and within the `deadline` of
    each request made under one. Never follows redirects."""
    tls = _tls()
    transport = httpx.HTTPTransport(verify=tls, trust_env=False)
    transport._pool = httpcore.ConnectionPool(  # httpx takes no network backend of its own
        ssl_context=tls,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,  # httpx's defaults
        network_backend=_CheckedBackend(allowed),
    )
    return httpx.Client(transport=transport, follow_redirects=False, trust_env=False)
