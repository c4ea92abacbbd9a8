"""File: secrets Mailroom must give back (mailbox passwords), sealed at rest with Fernet.

Each is sealed for the row it belongs to: the key is derived from the secret key and from
what the secret is for (a mailbox's employee, server, port, user and TLS mode). Whoever can
write the table but does not hold the secret key cannot move a password to a server of their
own, or a mailbox to another employee: the password no longer unseals there."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session

from app.models import Mailbox

log = logging.getLogger("mailroom.sealing")

INFO = b"mailroom mailbox passwords"
BOUND = "v2:"  # marks a text sealed for its row; releases before 2026-11-24 sealed without
BoundTo = Sequence[str | int | bool | None]


def _fernet(secret: bytes, info: bytes) -> Fernet:
    """A key of its own, derived from the secret key, so the HMAC key is never reused as is."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def _for(secret: bytes, bound_to: BoundTo) -> Fernet:
    what = json.dumps(list(bound_to), separators=(",", ":"), ensure_ascii=True)
    return _fernet(secret, INFO + b"\0" + what.encode("ascii"))


def seal(secret: bytes, plaintext: str, *, bound_to: BoundTo) -> str:
    return BOUND + _for(secret, bound_to).encrypt(plaintext.encode()).decode("ascii")


class UnboundError(Exception):
    """Sealed by a release before 2026-11-24, for no row in particular: read only by
    `seal_unbound_passwords`, which an operator runs once after upgrading."""


def unseal(secret: bytes, sealed: str, *, bound_to: BoundTo) -> str:
    """The plaintext; InvalidToken if it was sealed with another secret key or for anything
    else than `bound_to`; UnboundError if it was sealed for nothing in particular."""
    if not sealed.startswith(BOUND):
        raise UnboundError
    return _for(secret, bound_to).decrypt(sealed[len(BOUND) :].encode("ascii")).decode()


def unseal_unbound(secret: bytes, sealed: str) -> str:
    """A text sealed by a release before 2026-11-24, read once to seal it again, bound."""
    return _fernet(secret, INFO).decrypt(sealed.encode("ascii")).decode()


def sealed_for(mailbox: Mailbox) -> tuple[int | None, bool, str, int, str, str]:
    """What a mailbox's password is sealed for: changing any of these in the table, or moving
    the sealed text to another row, leaves the password unreadable."""
    return (
        mailbox.employee_id,
        mailbox.journal,
        mailbox.host,
        mailbox.port,
        mailbox.username,
        mailbox.tls,
    )


def seal_unbound_passwords(session: Session, secret: bytes) -> int:
    """Seal again, each for its own row, the passwords a release before 2026-11-24 sealed
    for no row (`mailroom mailboxes reseal`, once after the upgrade). Never on its own: the
    table's state at that moment is trusted, and a start that did this would let whoever
    writes the table plant an old sealed text beside a server of theirs and restart. One
    that does not unseal (another secret key) is left as it is; its mailbox says why."""
    resealed = 0
    unbound = sa.select(Mailbox).where(Mailbox.password_sealed.not_like(f"{BOUND}%"))
    for mailbox in session.scalars(unbound):
        try:
            password = unseal_unbound(secret, mailbox.password_sealed)
        except InvalidToken:
            log.warning("mailbox %d: its password does not unseal with this secret key", mailbox.id)
            continue
        mailbox.password_sealed = seal(secret, password, bound_to=sealed_for(mailbox))
        resealed += 1
    return resealed
