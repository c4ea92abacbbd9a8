"""File and record: the database tables (SQLAlchemy 2 declarative; Alembic owns the schema)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MAX_ID = 2**31 - 1  # the widest id every supported database stores as INTEGER
# For tables whose ids leave Mailroom (the API, webhooks, page links, the command line) and
# whose rows can be deleted: SQLite would give the next row a deleted newest row's id, which
# an integration still holds (PostgreSQL's sequences never do). Migration 0013 made them so.
IDS_NEVER_REUSED = {"sqlite_autoincrement": True}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware, on SQLite too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
        list[Any]: sa.JSON(),
    }


class Employee(Base):
    __tablename__ = "employees"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    capture_paused: Mapped[bool] = mapped_column(default=False)
    private_tags: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmployeeAlias(Base):
    __tablename__ = "employee_aliases"
    id: Mapped[int] = mapped_column(primary_key=True)
    employee_id: Mapped[int] = mapped_column(
        sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(sa.String(320), unique=True)


class Company(Base):
    __tablename__ = "companies"
    __table_args__ = IDS_NEVER_REUSED
    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(sa.String(253), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # the likely-job-move lookup (app/freshness.py) for each new contact
        sa.Index(
            "ix_contacts_name_lower",
            sa.func.lower(sa.text("last_name")),
            sa.func.lower(sa.text("first_name")),
        ),
        # filing's lookup of each address, in whatever case it is written (app/filing.py)
        sa.Index("ix_contacts_address_lower", sa.func.lower(sa.text("address"))),
        IDS_NEVER_REUSED,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(sa.String(320), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    company_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    first_name: Mapped[str] = mapped_column(sa.String(100), default="")
    last_name: Mapped[str] = mapped_column(sa.String(100), default="", index=True)
    title: Mapped[str] = mapped_column(sa.String(200), default="")
    phone: Mapped[str] = mapped_column(sa.String(50), default="")
    organization: Mapped[str] = mapped_column(sa.String(200), default="")  # as signed
    signature_at: Mapped[datetime | None] = mapped_column()  # date of the signature read last
    undeliverable_since: Mapped[datetime | None] = mapped_column()  # a bounce said so
    merged_into_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = IDS_NEVER_REUSED
    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(sa.String(64), unique=True)
    message_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    content_digest: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str | None] = mapped_column(sa.Text)
    body_text: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    direction: Mapped[str] = mapped_column(sa.String(16))
    outcome: Mapped[str] = mapped_column(sa.String(16))
    visibility: Mapped[str] = mapped_column(sa.String(16))
    size: Mapped[int] = mapped_column(default=0)
    # While every owner's copy waits for review (outcome "hold"), when the first one's
    # period ends; each owner's own period is message_owners.held_until.
    held_until: Mapped[datetime | None] = mapped_column()
    decision_id: Mapped[int] = mapped_column(sa.ForeignKey("decisions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    thread_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("threads.id", ondelete="SET NULL"), index=True
    )


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (sa.UniqueConstraint("message_id", "role", "address"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(sa.ForeignKey("messages.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(sa.String(16))
    address: Mapped[str] = mapped_column(sa.String(320))
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    contact_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    employee_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("employees.id", ondelete="SET NULL"), index=True
    )


class MessageOwner(Base):
    """One employee's copy of a message: the same mail from two employees is one message,
    but what each one's decision kept is theirs. `outcome` is capture, metadata_only or
    hold (waiting for their review until `held_until`); the message's own outcome is hold
    until one of its owners keeps it. `decision_id` is the decision that filed this copy,
    or last changed it (their capture of it, also at review): what explains it to its
    owner, where the message's own names its first filer's."""

    __tablename__ = "message_owners"
    __table_args__ = (sa.UniqueConstraint("message_id", "employee_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(sa.ForeignKey("messages.id", ondelete="CASCADE"))
    employee_id: Mapped[int] = mapped_column(
        sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    held_until: Mapped[datetime | None] = mapped_column()
    # None only for a copy an older release filed after migration 0017 (a rolling upgrade).
    decision_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("decisions.id", name="fk_message_owners_decision_id"), index=True
    )


class Relationship(Base):
    __tablename__ = "relationships"
    __table_args__ = (sa.UniqueConstraint("employee_id", "contact_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    employee_id: Mapped[int] = mapped_column(sa.ForeignKey("employees.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(
        sa.ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    sent_count: Mapped[int] = mapped_column(default=0)
    received_count: Mapped[int] = mapped_column(default=0)
    first_seen: Mapped[datetime] = mapped_column()
    last_seen: Mapped[datetime] = mapped_column()


class DecisionRecord(Base):
    """One link of the append-only, hash-chained decision log; never holds message content."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    channel: Mapped[str] = mapped_column(sa.String(16))
    employee_id: Mapped[int | None] = mapped_column(index=True)
    outcome: Mapped[str] = mapped_column(sa.String(16), index=True)
    # JSON, not JSONB: the text is kept as written, and verify requires the hashed text.
    rules: Mapped[list[Any]] = mapped_column()
    verdicts: Mapped[list[Any]] = mapped_column()
    facts: Mapped[dict[str, Any]] = mapped_column()
    policy_sha256: Mapped[str] = mapped_column(sa.String(64))
    message_id_hmac: Mapped[str | None] = mapped_column(sa.String(64))
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))  # covers the id: unique by the key


class LedgerGap(Base):
    """A run of decision-log records the retention purge removed (ids `from_id` to
    `through_id`), and its last record's hash, which the record after it links to: what
    `ledger.verify` checks the log's gaps against. The purge record (`purge_id`) carries a
    digest of its runs (app/ledger.py)."""

    __tablename__ = "ledger_gaps"
    through_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    from_id: Mapped[int] = mapped_column()
    through_hash: Mapped[str] = mapped_column(sa.String(64))
    purge_id: Mapped[int] = mapped_column(index=True)


class Receipt(Base):
    """Idempotency: one row per (submitter, raw bytes) so a retried message is never filed twice."""

    __tablename__ = "receipts"
    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    decision_id: Mapped[int] = mapped_column(sa.ForeignKey("decisions.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PolicyVersion(Base):
    __tablename__ = "policy_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[str] = mapped_column(sa.String(50))
    source: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column()


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    employee_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    label: Mapped[str] = mapped_column(sa.String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class Suppression(Base):
    """An erased or objecting person, known only by a keyed digest of their address."""

    __tablename__ = "suppressions"
    address_token: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # "erased" or "objected"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PersonalContact(Base):
    """An address on an employee's personal-contacts list, kept only as a keyed digest."""

    __tablename__ = "personal_contacts"
    __table_args__ = (sa.UniqueConstraint("employee_id", "address_token"), IDS_NEVER_REUSED)
    id: Mapped[int] = mapped_column(primary_key=True)
    employee_id: Mapped[int] = mapped_column(sa.ForeignKey("employees.id", ondelete="CASCADE"))
    address_token: Mapped[str] = mapped_column(sa.String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppPassword(Base):
    """A per-employee SMTP AUTH password; random, so stored as a plain SHA-256 like API tokens."""

    __tablename__ = "app_passwords"
    id: Mapped[int] = mapped_column(primary_key=True)
    employee_id: Mapped[int] = mapped_column(
        sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )
    password_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    label: Mapped[str] = mapped_column(sa.String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Mailbox(Base):
    """An IMAP mailbox Mailroom reads (an employee's, or a journal of all company mail).

    The password is sealed with a key derived from the secret key (app/sealing.py); it is
    never logged and never in an API response."""

    __tablename__ = "mailboxes"
    __table_args__ = IDS_NEVER_REUSED
    id: Mapped[int] = mapped_column(primary_key=True)
    employee_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )
    host: Mapped[str] = mapped_column(sa.String(253))
    port: Mapped[int] = mapped_column()
    username: Mapped[str] = mapped_column(sa.String(320))
    password_sealed: Mapped[str] = mapped_column(sa.Text)
    folders: Mapped[list[Any]] = mapped_column()
    sent_folders: Mapped[list[Any]] = mapped_column(default=list)
    tls: Mapped[str] = mapped_column(sa.String(16))  # "tls", "starttls" or "none"
    journal: Mapped[bool] = mapped_column(default=False)
    since: Mapped[datetime | None] = mapped_column()  # the backfill horizon
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sync_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    last_error_at: Mapped[datetime | None] = mapped_column()
    pending: Mapped[int] = mapped_column(default=0)  # messages on the server not yet synced
    synced: Mapped[int] = mapped_column(default=0)
    bodies_fetched: Mapped[int] = mapped_column(default=0)
    bodies_skipped: Mapped[int] = mapped_column(default=0)  # decided on headers alone


class MailboxFolder(Base):
    """Where the sync of one folder stands; committed with the outcomes it covers."""

    __tablename__ = "mailbox_folders"
    __table_args__ = (sa.UniqueConstraint("mailbox_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(sa.ForeignKey("mailboxes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(500))
    uidvalidity: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_uid: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Thread(Base):
    """A conversation: messages joined by Message-ID references, else by subject and people."""

    __tablename__ = "threads"
    __table_args__ = IDS_NEVER_REUSED
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(64), unique=True)  # a digest, never a subject
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContactChange(Base):
    """History of a contact: what changed, from what to what, and which message said so."""

    __tablename__ = "contact_changes"
    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        sa.ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    field: Mapped[str] = mapped_column(sa.String(32))
    old_value: Mapped[str] = mapped_column(sa.String(320), default="")
    new_value: Mapped[str] = mapped_column(sa.String(320), default="")
    message_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="SET NULL"), index=True
    )
    observed_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attachment(Base):
    """An attachment of a captured message: its name, type and size; never its content."""

    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(sa.String(255), default="")
    content_type: Mapped[str] = mapped_column(sa.String(127), default="")
    size: Mapped[int] = mapped_column(default=0)


class LoginLink(Base):
    """A one-time sign-in link for the web pages; only a hash of its token is kept."""

    __tablename__ = "login_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    employee_id: Mapped[int] = mapped_column(
        sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()


class WebSession(Base):
    """A signed-in browser, known by a hash of its cookie; ends at expiry or sign-out."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    employee_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )
    api_token_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class WebhookSubscription(Base):
    """An integration's subscription to content-free events, signed with its own secret."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = IDS_NEVER_REUSED
    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(
        sa.ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(sa.String(2000))
    secret: Mapped[str] = mapped_column(sa.String(100))  # signs deliveries, so kept readable
    events: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(default=True)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    disabled_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """The outbox: one event for one subscription, written in the event's own transaction."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = IDS_NEVER_REUSED
    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(sa.String(32))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()


class WebhookAttempt(Base):
    """The delivery log: every attempt with its answer; never the payload."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column()
    status_code: Mapped[int | None] = mapped_column()
    error: Mapped[str] = mapped_column(sa.String(200), default="")
