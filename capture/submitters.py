"""Receive: who may submit mail: SMTP AUTH app passwords, trusted relays, forged headers."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Collection, Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import AppPassword, Employee
from capture.parse import as_mail_spells_it

AR_HEADER = re.compile(rb"^authentication-results:", re.IGNORECASE)
RECEIVED = re.compile(rb"^received:", re.IGNORECASE)
FIELD_BREAK = re.compile(rb"\r\n(?![ \t])")  # a line break that ends a field
AR_ANYWHERE = re.compile(rb"(?:^|\n)authentication-results:", re.IGNORECASE)  # a field's start
DKIM_PASS = re.compile(r"\bdkim=pass\b[^;]*?\bheader\.(?:d|i)=@?([a-z0-9.-]+)", re.IGNORECASE)
DMARC_FAIL = re.compile(r"(?:^|;)\s*dmarc=fail\b", re.IGNORECASE)


def new_app_password(session: Session, employee_id: int, label: str = "") -> str:
    """A random SMTP password for one employee; shown once, stored as its SHA-256."""
    password = secrets.token_urlsafe(24)
    session.add(AppPassword(employee_id=employee_id, password_hash=_digest(password), label=label))
    return password


def app_passwords(session: Session, employee_id: int) -> list[AppPassword]:
    """An employee's app passwords, oldest first: ids, labels and times, never a secret."""
    query = sa.select(AppPassword).where(AppPassword.employee_id == employee_id)
    return list(session.scalars(query.order_by(AppPassword.id)))


def revoke_app_password(session: Session, password_id: int, now: datetime) -> bool:
    """Revoke an app password at once (idempotent): the next AUTH with it fails. False if
    there is no such password."""
    row = session.get(AppPassword, password_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
    return row is not None


def authenticate_app_password(
    sessions: sessionmaker[Session], login: str, password: str
) -> str | None:
    """The employee address for a valid (login, app password) pair, else None. A login is
    UTF-8 (RFC 4616): its Unicode domain is the one the employee's address spells in A-labels."""
    wanted = as_mail_spells_it(login.strip()).lower()
    with sessions() as session:
        email = session.scalar(
            sa.select(Employee.email)
            .join(AppPassword, AppPassword.employee_id == Employee.id)
            .where(
                AppPassword.password_hash == _digest(password),
                AppPassword.revoked_at.is_(None),
                Employee.email == wanted,
            )
        )
    return email


def _digest(password: str) -> str:
    # App passwords are 192 random bits: a fast hash is safe, as for API tokens.
    return hashlib.sha256(password.encode()).hexdigest()


def is_trusted(peer: str, relays: Collection[str]) -> bool:
    if not relays:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(cidr, strict=False) for cidr in relays)


def header_blocks(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its folded continuation lines) and the rest. Cut where a
    line break is not followed by a fold, in one pass: built up line by line, a field folded
    into tens of thousands of short lines (a header section of 256 KiB holds 65,000) took a
    quarter of a second of the listener's event loop."""
    end = raw.find(b"\r\n\r\n")
    head, rest = (raw, b"") if end < 0 else (raw[: end + 2], raw[end + 2 :])
    if head.endswith(b"\r\n"):
        head = head[:-2]
    return FIELD_BREAK.split(head), rest


def _claims(block: bytes, authserv_id: str) -> bool:
    return _serv_id(block.split(b":", 1)[1].decode("utf-8", "replace")) == authserv_id.lower()


def _serv_id(value: str) -> str:
    return value.strip().split(";", 1)[0].strip().lower()


def our_verdict(fields: Iterable[tuple[str, str]], authserv_id: str) -> str:
    """The results our server wrote ("" if none): those of every Authentication-Results field
    under our authserv-id above the first Received field, else of the topmost one alone.
    Our server prepends its verdict (RFC 8601 section 5), often a field per filter (OpenDKIM's
    dkim=, OpenDMARC's spf= and dmarc=), above the Received field it adds: nothing the sender
    wrote is above that. Below a Received (one a later hop added, or a server that writes its
    verdict under its own Received), the field after the topmost could be the sender's, if the
    server did not strip it. `fields`: (lower-case name, value), in the message's order; a
    Received field's value is not read."""
    wanted = authserv_id.lower()
    found: list[str] = []
    below_received = False
    for name, value in fields:
        if name == "received":
            if found:
                break
            below_received = True
        elif name == "authentication-results" and _serv_id(value) == wanted:
            found.append(value.split(";", 1)[1] if ";" in value else "")
            if below_received:
                break
    return ";".join(found)


def dmarc_failed(fields: Iterable[tuple[str, str]], authserv_id: str) -> bool:
    """Whether our server (in a mailbox's mail: the organization's MX) says the message
    failed DMARC: its From domain was not the sender's to use."""
    return DMARC_FAIL.search(our_verdict(fields, authserv_id)) is not None


def strip_our_results(raw: bytes, authserv_id: str) -> bytes:
    """Remove Authentication-Results fields that claim to be ours: only we may write those."""
    end = raw.find(b"\r\n\r\n")
    if not AR_ANYWHERE.search(raw, 0, len(raw) if end < 0 else end + 2):
        return raw  # most mail: no such field at all
    blocks, rest = header_blocks(raw)
    kept = [b for b in blocks if not (AR_HEADER.match(b) and _claims(b, authserv_id))]
    if len(kept) == len(blocks):
        return raw
    return b"\r\n".join(kept) + b"\r\n" + rest


def as_received(raw: bytes, authserv_id: str, *, relayed: bool) -> tuple[bytes, frozenset[str]]:
    """The message as it is decided, and the domains whose DKIM pass vouches for it: from a
    trusted relay, its Authentication-Results under our authserv-id count; from anyone else
    they are forged, and stripped."""
    if relayed:
        return raw, frozenset(dkim_domains(raw, authserv_id))
    return strip_our_results(raw, authserv_id), frozenset()


def dkim_domains(raw: bytes, authserv_id: str) -> set[str]:
    """Domains that our trusted relay (`our_verdict`) says passed DKIM."""
    blocks, _ = header_blocks(raw)
    fields = (
        ("authentication-results", b.split(b":", 1)[1].decode("utf-8", "replace"))
        if AR_HEADER.match(b)
        else ("received", "")
        for b in blocks
        if AR_HEADER.match(b) or RECEIVED.match(b)
    )
    verdict = our_verdict(fields, authserv_id).replace("\r\n", " ")
    return {d.lower().rstrip(".") for d in DKIM_PASS.findall(verdict)}
