"""Record: the append-only, hash-chained decision log that never holds message content."""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from app.models import DecisionRecord, LedgerGap, Message, MessageOwner, Receipt
from app.prepared import Prepared
from capture.keyed import keyed_digest
from policies.model import Channel, Decision

GENESIS = "0" * 64
_HEAD = Prepared(
    sa.select(DecisionRecord.id, DecisionRecord.hash).order_by(DecisionRecord.id.desc()).limit(1)
)
_COLUMNS = tuple(DecisionRecord.__table__.columns.keys())
_JSON_COLUMNS = ("rules", "verdicts", "facts")


class _EncodedJSON(sa.TypeDecorator[str]):
    """A JSON column's value bound as the text `canonical` already encoded for the hash."""

    impl = sa.JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


_INSERT = Prepared(
    sa.insert(DecisionRecord).values(
        {c: sa.bindparam(c, type_=_EncodedJSON() if c in _JSON_COLUMNS else None) for c in _COLUMNS}
    )
)
# One encoder for every record: json.dumps with these arguments builds a new one per call.
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
_STRING: Callable[[str], str] = json.encoder.encode_basestring_ascii  # what _ENCODE uses
_LOCK = Prepared(sa.select(sa.func.pg_advisory_xact_lock(sa.bindparam("key", type_=sa.BigInteger))))
_HEAD_KEY = "mailroom.ledger.head"  # conn.info: (transaction, (id, hash)) it last appended
_LEDGER_LOCK = 0x4D41494C  # "MAIL": serializes appends across PostgreSQL processes
ACTION_CHANNEL = "api"  # records of actions on requests, not decisions on messages


@dataclass(frozen=True, slots=True)
class Entry:
    """What one log record says, before it is chained."""

    created_at: datetime
    channel: Channel
    employee_id: int | None
    decision: Decision
    message_id_hmac: str | None


def message_id_hmac(secret: bytes, message_id: str | None) -> str | None:
    if not message_id:
        return None
    return keyed_digest(secret, b"message-id:" + message_id.encode()).hex()


@dataclass(slots=True)
class Chained:
    """One log record as written: a DecisionRecord row's fields, without the ORM's per-object
    bookkeeping (about 0.1 ms a message on the hot path)."""

    created_at: datetime
    channel: str
    employee_id: int | None
    outcome: str
    rules: list[str]
    verdicts: list[dict[str, Any]]
    facts: dict[str, Any]
    policy_sha256: str
    message_id_hmac: str | None
    id: int = 0
    prev_hash: str = ""
    hash: str = ""
    # `rules` and `verdicts` as `_encoded_fields` writes them, where already known.
    encoded: tuple[str, str] | None = None


def canonical(record: DecisionRecord | Chained) -> bytes:
    """The bytes a record's hash covers: every field but the hash itself, in a fixed form."""
    body: dict[str, Any] = {
        "id": record.id,
        "created_at": record.created_at.isoformat(timespec="microseconds"),
        "channel": record.channel,
        "employee_id": record.employee_id,
        "outcome": record.outcome,
        "rules": record.rules,
        "verdicts": record.verdicts,
        "facts": record.facts,
        "policy_sha256": record.policy_sha256,
        "message_id_hmac": record.message_id_hmac,
        "prev_hash": record.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _encoded_fields(record: DecisionRecord | Chained) -> dict[str, str]:
    """The JSON columns as `canonical` writes them. A decision's verdicts are all
    `{"hit": bool, "id": str}`: those are written out directly (the encoder would sort the
    keys of each), any other form goes to the encoder."""
    if isinstance(record, Chained) and record.encoded is not None:
        rules, verdicts_text = record.encoded
        return {"rules": rules, "verdicts": verdicts_text, "facts": _ENCODE(record.facts)}
    verdicts = [
        f'{{"hit":{"true" if v["hit"] else "false"},"id":{_STRING(v["id"])}}}'
        if len(v) == 2 and type(v.get("hit")) is bool and type(v.get("id")) is str
        else _ENCODE(v)
        for v in record.verdicts
    ]
    return {
        "rules": _ENCODE(record.rules),
        "verdicts": f"[{','.join(verdicts)}]",
        "facts": _ENCODE(record.facts),
    }


def _scalar(value: object) -> str:
    """One JSON value as _ENCODE writes it; strings, ints and null without building an
    encoder each time."""
    if type(value) is str:
        return _STRING(value)
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    return _ENCODE(value)


def _canonical_encoded(record: Chained, encoded: dict[str, str]) -> bytes:
    """`canonical(record)`, built around its JSON fields as already encoded (the same
    encoder, so the same text): the same bytes, for half the encoding."""
    e = _scalar
    return (
        f'{{"channel":{e(record.channel)},'
        f'"created_at":{e(record.created_at.isoformat(timespec="microseconds"))},'
        f'"employee_id":{e(record.employee_id)},"facts":{encoded["facts"]},"id":{e(record.id)},'
        f'"message_id_hmac":{e(record.message_id_hmac)},"outcome":{e(record.outcome)},'
        f'"policy_sha256":{e(record.policy_sha256)},"prev_hash":{e(record.prev_hash)},'
        f'"rules":{encoded["rules"]},"verdicts":{encoded["verdicts"]}}}'
    ).encode()


_RULE_AND_HIT = operator.attrgetter("rule", "hit")


@lru_cache(maxsize=1024)
def _asked(asked: tuple[tuple[str, bool], ...]) -> tuple[str, str]:
    """A decision's `rules` and `verdicts` columns as `_encoded_fields` writes them, from the
    rules asked and their answers: a policy's decisions have a few dozen such lists between
    them (every rule up to the deciding one misses), so each is encoded once."""
    verdicts = ",".join(
        f'{{"hit":{"true" if hit else "false"},"id":{_STRING(rule)}}}' for rule, hit in asked
    )
    return _ENCODE([rule for rule, hit in asked if hit]), f"[{verdicts}]"


def append(db: Session | sa.Connection, entry: Entry) -> Chained:
    """Add one record at the head of the chain, inside the caller's transaction."""
    return _chain(db, unchained(entry))


def unchained(entry: Entry) -> Chained:
    """The record an entry becomes, before it is chained (no id, link or hash yet)."""
    decision = entry.decision
    asked = tuple(map(_RULE_AND_HIT, decision.verdicts))
    return Chained(
        created_at=entry.created_at,
        channel=entry.channel.value,
        employee_id=entry.employee_id,
        outcome=decision.outcome.value,
        rules=[rule for rule, hit in asked if hit],
        verdicts=[{"id": rule, "hit": hit} for rule, hit in asked],
        facts=decision.facts,
        policy_sha256=decision.policy_sha256,
        message_id_hmac=entry.message_id_hmac,
        encoded=_asked(asked),
    )


@dataclass(frozen=True)
class Action:
    """A person's request acted on (objection, erasure, access, review), in content-free terms:
    counts and ids, never an address, subject or text."""

    created_at: datetime
    kind: str  # e.g. "erasure", "objection", "access-export", "review-capture"
    employee_id: int | None  # the employee who acted, if an employee did
    policy_sha256: str
    facts: dict[str, Any]


def append_action(
    db: Session | sa.Connection, action: Action, *, after: tuple[int, str] | None = None
) -> Chained:
    """Chain an action into the same log as the decisions, on the `api` channel (after the
    head, or after `after`: see _chain)."""
    return _chain(
        db,
        Chained(
            created_at=action.created_at,
            channel=ACTION_CHANNEL,
            employee_id=action.employee_id,
            outcome=action.kind,
            rules=[],
            verdicts=[],
            facts=action.facts,
            policy_sha256=action.policy_sha256,
            message_id_hmac=None,
        ),
        after=after,
    )


def wait_for_appends(db: Session | sa.Connection) -> None:
    """Take the log's append lock for the rest of the transaction, where appends need one
    (PostgreSQL: SQLite's writers take its write lock as they begin). A batch holds it from
    its first decision until it commits, so what this transaction reads next includes all
    the batch filed: an erasure misses none of the person's mail being filed."""
    conn = db.connection() if isinstance(db, Session) else db
    if conn.dialect.name == "postgresql":
        _LOCK.rows(conn, {"key": _LEDGER_LOCK})


def _chain(
    db: Session | sa.Connection, record: Chained, *, after: tuple[int, str] | None = None
) -> Chained:
    """Chain `record` to the head: the newest record, or `after` (the id and hash of the
    newest record there was, when a purge has just removed it)."""
    conn = db.connection() if isinstance(db, Session) else db
    # The head this transaction (or savepoint) wrote last is still the head: the write lock
    # (SQLite) or the advisory lock (PostgreSQL) is held until it ends. A savepoint is its own
    # key, so one rolled back never leaves a head behind that was not kept.
    innermost = conn.get_nested_transaction() or conn.get_transaction()
    known = conn.info.get(_HEAD_KEY)
    if after is not None:
        head: tuple[int, str] | None = after
    elif (
        innermost is not None
        and known is not None
        and known[0] is innermost
        and innermost.is_active
    ):
        head = known[1]
    else:
        if conn.dialect.name == "postgresql":
            _LOCK.rows(conn, {"key": _LEDGER_LOCK})
        row = _HEAD.first(conn)
        head = (row[0], row[1]) if row else None
    record.id = (head[0] + 1) if head else 1
    record.prev_hash = head[1] if head else GENESIS
    encoded = _encoded_fields(record)
    record.hash = hashlib.sha256(_canonical_encoded(record, encoded)).hexdigest()
    _INSERT.run(conn, {c: getattr(record, c) for c in _COLUMNS} | encoded)
    conn.info[_HEAD_KEY] = (innermost, (record.id, record.hash))
    return record


PURGE_KIND = "ledger-purge"
# Records a purge removes in one transaction. It holds the log's lock (PostgreSQL) or
# SQLite's write lock, which the SMTP writer waits on for at most 30 s before answering 451:
# 20,000 take about a quarter of a second; a lowered `decision_days` may free millions.
PURGE_CHUNK = 20_000


def purge_before(
    session: Session,
    cutoff: datetime,
    *,
    policy_sha256: str,
    now: datetime,
    at_most: int = PURGE_CHUNK,
) -> int:
    """Remove the log's records written before `cutoff`, oldest first and `at_most` of them
    (call again, in a transaction of its own, while that many went), but none that a stored
    message, or an owner's copy of one, still refers to (kept mail keeps its explanation,
    each owner's copy its own) nor any purge record (they name the gaps). Each gap left
    before a record that stays is noted (LedgerGap: the id and hash of the last record
    removed before it), so `verify` still checks every record that is left, and the purge
    record, itself chained, carries a digest of them. It is chained to the head as it was,
    also when it removed the head itself: ids are never used again, and the chain goes on
    from the hash it names."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":  # no append between the reads below and the purge
        _LOCK.rows(conn, {"key": _LEDGER_LOCK})
    newest = _HEAD.first(conn)
    if newest is None:
        return 0
    head = int(newest[0])
    kept = sa.or_(
        sa.exists().where(Message.decision_id == DecisionRecord.id),
        sa.exists().where(MessageOwner.decision_id == DecisionRecord.id),
    )
    purge = sa.and_(DecisionRecord.channel == ACTION_CHANNEL, DecisionRecord.outcome == PURGE_KIND)
    expired = session.execute(
        sa.select(DecisionRecord.id, DecisionRecord.hash)
        .where(DecisionRecord.created_at < cutoff, DecisionRecord.id <= head, ~kept, ~purge)
        .order_by(DecisionRecord.id)
        .limit(at_most)
    ).all()
    if not expired:
        return 0
    ids = [int(row.id) for row in expired]
    # Each run of ids removed: the record after it (one that stays, one removed earlier, or
    # the purge record after the head) links to its last record's hash.
    gaps: list[list[Any]] = []
    for row in expired:
        if gaps and gaps[-1][1] == row.id - 1:
            gaps[-1][1:] = [int(row.id), str(row.hash)]
        else:
            gaps.append([int(row.id), int(row.id), str(row.hash)])
    for start in range(0, len(ids), _IDS_A_STATEMENT):
        chunk = ids[start : start + _IDS_A_STATEMENT]
        session.execute(sa.delete(Receipt).where(Receipt.decision_id.in_(chunk)))
        session.execute(sa.delete(DecisionRecord).where(DecisionRecord.id.in_(chunk)))
    record = append_action(
        session,
        Action(
            created_at=now,
            kind=PURGE_KIND,
            employee_id=None,
            policy_sha256=policy_sha256,
            facts={"removed": len(ids), "gaps": len(gaps), "gaps_sha256": _digest(gaps)},
        ),
        after=(head, str(newest[1])),
    )
    session.execute(
        sa.insert(LedgerGap),
        [
            {"from_id": first, "through_id": last, "through_hash": hashed, "purge_id": record.id}
            for first, last, hashed in gaps
        ],
    )
    return len(ids)


_IDS_A_STATEMENT = 5000  # within any database's limit of bound parameters


def _digest(gaps: list[list[Any]]) -> str:
    """What a purge record says of the runs it removed: `[[from_id, through_id,
    through_hash], ...]` in id order, hashed."""
    return hashlib.sha256(json.dumps(sorted(gaps), separators=(",", ":")).encode()).hexdigest()


def _purged_through(session: Session, through_id: int) -> str | None:
    """The hash a purge record says the removed records ended with, if one says so."""
    purges = session.scalars(
        sa.select(DecisionRecord.facts)
        .where(DecisionRecord.channel == ACTION_CHANNEL, DecisionRecord.outcome == PURGE_KIND)
        .order_by(DecisionRecord.id.desc())
    )
    for facts in purges:
        if facts.get("through_id") == through_id:
            return str(facts.get("through_hash"))
    return None


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_broken: int | None
    problem: str | None
    head_id: int | None = None  # the newest record checked: note it outside Mailroom
    head_hash: str | None = None


@dataclass(frozen=True)
class Anchor:
    """A record's id and hash as noted outside Mailroom earlier (e.g. by compliance, daily).
    The chain proves the records agree with each other; an anchor proves they are still the
    ones that were there: a log rewritten or cut back behind it no longer matches."""

    id: int
    hash: str


# Each record as the database holds it, for what SQL reads (a rule filter matches the text of
# `rules`; SQLite compares `created_at` as text): the JSON columns' text (the JSON type keeps
# it verbatim, on PostgreSQL too, where JSONB would not), and `created_at` as the driver reads
# it (SQLite's text; PostgreSQL's is an instant, written one way only).
_STORED = (
    sa.type_coerce(DecisionRecord.created_at, sa.types.NullType()).label("stored_created_at"),
    *(sa.cast(DecisionRecord.__table__.c[c], sa.Text).label(f"stored_{c}") for c in _JSON_COLUMNS),
)


def _stored_as_written(
    record: DecisionRecord, stored: Sequence[Any], write_time: Callable[[Any], Any] | None
) -> bool:
    """Whether the database holds `record` in the form it was written and hashed in: the
    same value in another form (a JSON escape, a UTC offset) hashes alike once parsed, yet
    SQL filters read the form. Records written before 2026-11-23 hold their JSON as the
    JSON type wrote it then (`json.dumps` with its default separators), which is as good."""
    at, *texts = stored
    encoded = _encoded_fields(record)
    written_at = write_time(record.created_at) if write_time else record.created_at
    return at == written_at and all(
        text in (encoded[c], json.dumps(getattr(record, c)))
        for c, text in zip(_JSON_COLUMNS, texts, strict=True)
    )


def verify(session: Session, *, batch: int = 5000, anchor: Anchor | None = None) -> Verification:
    """Walk the whole chain and name the first record whose hash, link or stored form does
    not hold. A record after a gap the retention purge left links to the hash noted for the
    gap (LedgerGap, or an older purge record's `through_hash`), and the gaps noted must be
    those their purge records name; an anchor the purge removed is checked against the hash
    noted where its record ended a gap.

    The walk reads one snapshot of the log: a purge committed while it reads (the retention
    job runs every 10 minutes; a large log takes minutes) would otherwise remove records it
    has not reached, and read as records removed. SQLite's reading transaction is one; on
    PostgreSQL, whose statements each read what is committed when they start, it takes a
    repeatable-read transaction of its own."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return _walk(session, batch=batch, anchor=anchor)
    with Session(bind.execution_options(isolation_level="REPEATABLE READ")) as snapshot:
        return _walk(snapshot, batch=batch, anchor=anchor)


def _walk(session: Session, *, batch: int, anchor: Anchor | None) -> Verification:
    checked, last_id, head_hash = 0, 0, None
    expected_prev: str | None = GENESIS
    anchored = anchor is None
    digests: dict[int, str] = {}  # each purge record's digest of the gaps it made
    dialect = session.get_bind().dialect
    write_time = DecisionRecord.__table__.c.created_at.type.dialect_impl(dialect).bind_processor(
        dialect
    )
    while True:
        rows = session.execute(
            sa.select(DecisionRecord, *_STORED)
            .where(DecisionRecord.id > last_id)
            .order_by(DecisionRecord.id)
            .limit(batch)
        ).all()
        if not rows:
            break
        runs = _runs_within(session, last_id, rows[-1][0].id)
        for row in rows:
            record, stored = row[0], tuple[Any, ...](row[1:])
            if record.id != last_id + 1:  # records were removed before this one
                expected_prev = _removed_between(session, runs, last_id, record.id)
                if expected_prev is None:
                    problem = "earlier records removed without a purge record"
                    return Verification(False, checked, record.id, problem)
            if anchor is not None and not anchored and anchor.id < record.id:  # purged since
                ended = runs.get(anchor.id, (0, None))[1] or _purged_through(session, anchor.id)
                if ended not in (None, anchor.hash):
                    return Verification(False, checked, anchor.id, _DIFFERS)
                anchored = True
            if record.prev_hash != expected_prev:
                return Verification(False, checked, record.id, "link to previous record broken")
            if hashlib.sha256(canonical(record)).hexdigest() != record.hash:
                return Verification(False, checked, record.id, "record altered after writing")
            if not _stored_as_written(record, stored, write_time):
                return Verification(
                    False, checked, record.id, "record stored in another form than written"
                )
            if anchor is not None and record.id == anchor.id:
                if record.hash != anchor.hash:
                    return Verification(False, checked, record.id, _DIFFERS)
                anchored = True
            if record.outcome == PURGE_KIND and record.channel == ACTION_CHANNEL:
                digests[record.id] = str(record.facts.get("gaps_sha256", _digest([])))
            expected_prev, last_id, checked = record.hash, record.id, checked + 1
            head_hash = record.hash
        session.expunge_all()
    head_id = last_id or None
    unnamed = _gaps_unnamed(session, digests)
    if unnamed is not None:
        problem = "gaps noted that their purge record does not name"
        return Verification(False, checked, unnamed, problem, head_id, head_hash)
    if not anchored:
        return Verification(
            False, checked, None, "log ends before the anchor noted", head_id, head_hash
        )
    return Verification(True, checked, None, None, head_id, head_hash)


_DIFFERS = "record differs from the anchor noted"


def _runs_within(session: Session, first: int, last: int) -> dict[int, tuple[int, str]]:
    """The runs of removed records noted from `first` to before `last`: by the id each ends
    with, the id it starts from and its last record's hash."""
    return {
        int(through_id): (int(from_id), str(through_hash))
        for from_id, through_id, through_hash in session.execute(
            sa.select(LedgerGap.from_id, LedgerGap.through_id, LedgerGap.through_hash).where(
                LedgerGap.through_id > first, LedgerGap.through_id < last
            )
        )
    }


def _removed_between(
    session: Session, runs: dict[int, tuple[int, str]], before: int, after: int
) -> str | None:
    """The hash the record `after` links to, if the runs noted account for every id between
    it and the record `before` it (0: none); None if one is missing unaccounted for."""
    link: str | None = None
    through = after - 1
    while through > before:
        run = runs.get(through)
        if run is None:  # a purge made before runs were noted removed a prefix up to here
            prefix = _purged_through(session, through)
            return None if prefix is None else link or prefix
        link = link or run[1]
        through = run[0] - 1
    return link if through == before else None


def _gaps_unnamed(session: Session, digests: dict[int, str]) -> int | None:
    """The id of the first purge record whose gaps noted (LedgerGap) are not those it names,
    or of a gap noted by no purge record; None when they all agree. A gap noted by hand would
    otherwise hide a record removed by hand."""
    named = dict(digests)
    rows = session.execute(
        sa.select(
            LedgerGap.purge_id, LedgerGap.from_id, LedgerGap.through_id, LedgerGap.through_hash
        ).order_by(LedgerGap.purge_id, LedgerGap.through_id)
    )
    for purge_id, group in itertools.groupby(rows, key=lambda row: int(row[0])):
        gaps: list[list[Any]] = [[int(row[1]), int(row[2]), str(row[3])] for row in group]
        digest = named.pop(purge_id, None)
        if digest is None:  # no purge record is there to name it
            return int(gaps[0][0])
        if digest != _digest(gaps):
            return purge_id
    return next((i for i, digest in sorted(named.items()) if digest != _digest([])), None)
