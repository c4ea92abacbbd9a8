"""Keyed digests (HMAC-SHA256) as the hot path takes them: a message's receipt, same-mail and
thread keys, its Message-ID's token and its participants' tokens, half a dozen a message."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache


@lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


def keyed_digest(secret: bytes, data: bytes) -> bytes:
    """`hmac.digest(secret, data, "sha256")` in under half the time: the key is prepared once
    a secret, where each one-shot call has OpenSSL 3 look the algorithm up and hash the key."""
    mac = _keyed(secret).copy()
    mac.update(data)
    return mac.digest()
