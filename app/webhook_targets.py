"""Record: where webhooks may be sent: public addresses, and the networks an operator allows.

A delivery's status code is readable back from its log, so a webhook aimed at this host or its
network would be a way to probe them (SSRF). Each URL is checked when it is subscribed and
again before each delivery, since what a name resolves to can change in between.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

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


def may_send_to(url: str, allowed: Sequence[Network] = ()) -> bool:
    """Whether the URL's host resolves, and every address it resolves to is public or in one of
    the `allowed` networks (MAILROOM_WEBHOOK_ALLOW_NETWORKS)."""
    host = urlsplit(url).hostname
    addresses = resolve(host) if host else []
    return bool(addresses) and all(
        is_public(a) or any(a in network for network in allowed) for a in addresses
    )
