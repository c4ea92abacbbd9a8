"""Receive: who may submit mail: SMTP AUTH app passwords, trusted relays, forged headers."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Collection, Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import AppPassword, Employee

AR_HEADER = re.compile(rb"^authentication-results:", re.IGNORECASE)
AR_ANYWHERE = re.compile(rb"(?:^|\n)authentication-results:", re.IGNORECASE)  # a field's start
DKIM_PASS = re.compile(r"\bdkim=pass\b[^;]*?\bheader\.(?:d|i)=@?([a-z0-9.-]+)", re.IGNORECASE)
DMARC_FAIL = re.compile(r"(?:^|;)\s*dmarc=fail\b", re.IGNORECASE)


def new_app_password(session: Session, employee_id: int, label: str = "") -> str:
    """A random SMTP password for one employee; shown once, stored as its SHA-256."""
    password = secrets.token_urlsafe(24)
    session.add(AppPassword(employee_id=employee_id, password_hash=_digest(password), label=label))
    return password


def authenticate_app_password(
    sessions: sessionmaker[Session], login: str, password: str
) -> str | None:
    """The employee address for a valid (login, app password) pair, else None."""
    with sessions() as session:
        email = session.scalar(
            sa.select(Employee.email)
            .join(AppPassword, AppPassword.employee_id == Employee.id)
            .where(
                AppPassword.password_hash == _digest(password),
                AppPassword.revoked_at.is_(None),
                Employee.email == login.strip().lower(),
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
    """The header fields (each with its folded continuation lines) and the rest."""
    end = raw.find(b"\r\n\r\n")
    head, rest = (raw, b"") if end < 0 else (raw[: end + 2], raw[end + 2 :])
    blocks: list[bytes] = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and blocks:
            blocks[-1] += b"\r\n" + line
        else:
            blocks.append(line)
    return blocks, rest


def _claims(block: bytes, authserv_id: str) -> bool:
    return _serv_id(block.split(b":", 1)[1].decode("utf-8", "replace")) == authserv_id.lower()


def _serv_id(value: str) -> str:
    return value.strip().split(";", 1)[0].strip().lower()


def dmarc_failed(headers: Iterable[tuple[str, str]], authserv_id: str) -> bool:
    """Whether the topmost Authentication-Results under `authserv_id` (the organization's own
    server, in a mailbox's mail) says the message failed DMARC: its From domain was not
    the sender's to use. Only the topmost, as for DKIM below."""
    wanted = authserv_id.lower()
    for name, value in headers:
        if name == "authentication-results" and _serv_id(value) == wanted:
            return DMARC_FAIL.search(value.split(";", 1)[1] if ";" in value else "") is not None
    return False


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


def dkim_domains(raw: bytes, authserv_id: str) -> set[str]:
    """Domains that the topmost Authentication-Results under our authserv-id say passed DKIM.

    Only the topmost: the trusted relay prepends its own verdict (RFC 8601 section 5), and a
    field below it under the same id, if the relay did not strip it, came from the sender."""
    blocks, _ = header_blocks(raw)
    for block in blocks:
        if AR_HEADER.match(block) and _claims(block, authserv_id):
            text = block.decode("utf-8", "replace").replace("\r\n", " ")
            return {d.lower().rstrip(".") for d in DKIM_PASS.findall(text)}
    return set()
