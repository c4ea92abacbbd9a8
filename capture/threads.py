"""Parse, threads: which conversation a message belongs to, from its headers alone."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from capture import forward_labels as labels
from capture.parse import ParsedMessage

MAX_SUBJECT = 300  # characters of a subject that are normalized
_PREFIX = re.compile(
    r"^\s*([^\W\d_][^\s:\uff1a\[\]()]{0,15}?)\s*(?:\[\d{1,4}\]|\(\d{1,4}\)|\^\d{1,4})?\s*[:\uff1a]",
    re.UNICODE,
)
_LIST_TAG = re.compile(r"^\s*\[[^\[\]]{1,60}\]")
_TRAILER = re.compile(r"\s*\((?:fwd|fw|forw|forward)\)\s*$", re.IGNORECASE)
_PREFIXES = labels.FORWARD_PREFIXES | labels.REPLY_PREFIXES | {"réf", "ref", "rif", "antwort"}


class ThreadBasis(StrEnum):
    """What a thread key was derived from, surest first."""

    REFERENCES = "references"  # the first Message-ID in References: the thread's root
    IN_REPLY_TO = "in-reply-to"  # the parent, when References is missing
    MESSAGE_ID = "message-id"  # a message that answers nothing starts its own thread
    SUBJECT = "subject"  # no usable Message-IDs: normalized subject and participants


@dataclass(frozen=True)
class ThreadKey:
    """A thread key and every Message-ID that may join this message to a stored thread.

    The key is content (a Message-ID, or a digest of subject and participants): store it only
    for a message that is kept, like its Message-ID."""

    key: str
    basis: ThreadBasis
    ids: tuple[str, ...]  # own Message-ID, In-Reply-To, References: look a thread up by any

    @property
    def is_fallback(self) -> bool:
        return self.basis is ThreadBasis.SUBJECT


def thread_key(message: ParsedMessage) -> ThreadKey:
    """The thread a message belongs to: References' root, else its parent, else itself; with
    no Message-IDs at all, a digest of the normalized subject and the participants."""
    ids = tuple(
        dict.fromkeys(
            i for i in (message.message_id, message.in_reply_to, *message.references) if i
        )
    )
    if message.references:
        return ThreadKey(message.references[0], ThreadBasis.REFERENCES, ids)
    if message.in_reply_to:
        return ThreadKey(message.in_reply_to, ThreadBasis.IN_REPLY_TO, ids)
    if message.message_id:
        return ThreadKey(message.message_id, ThreadBasis.MESSAGE_ID, ids)
    return ThreadKey(subject_key(message), ThreadBasis.SUBJECT, ids)


def subject_key(message: ParsedMessage) -> str:
    """A digest of the normalized subject and the participants' addresses, lowercased and
    sorted, so that a reply (with its prefix, from the other side) gets the same key."""
    participants = sorted({a.address.lower() for a in message.participants})
    material = "\n".join((normalize_subject(message.subject), *participants))
    return "subject:" + hashlib.sha256(material.encode("utf-8", "replace")).hexdigest()[:32]


def normalize_subject(subject: str) -> str:
    """'Re: AW: [acme-list] Fwd: Quote (fwd)' -> 'quote': reply and forward prefixes in many
    languages (with counts: 'Re[2]:', 'RE^2:'), list tags and '(fwd)' removed, case folded."""
    text = " ".join(subject[:MAX_SUBJECT].split())
    while text:  # each round strips at least two characters: linear in the (capped) subject
        tag = _LIST_TAG.match(text)
        if tag:
            text = text[tag.end() :]
            continue
        prefix = _PREFIX.match(text)
        if prefix and prefix.group(1).lower() in _PREFIXES:
            text = text[prefix.end() :]
            continue
        break
    return _TRAILER.sub("", text).strip().casefold()
