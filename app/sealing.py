"""File: secrets Mailroom must give back (mailbox passwords), sealed at rest with Fernet."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _fernet(secret: bytes) -> Fernet:
    """A key of its own, derived from the secret key, so the HMAC key is never reused as is."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"mailroom mailbox passwords"
    ).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret: bytes, plaintext: str) -> str:
    return _fernet(secret).encrypt(plaintext.encode()).decode("ascii")


def unseal(secret: bytes, sealed: str) -> str:
    return _fernet(secret).decrypt(sealed.encode("ascii")).decode()
