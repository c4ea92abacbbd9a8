"""ids are never used again: on SQLite, the tables whose ids leave Mailroom get AUTOINCREMENT

SQLite gives a new row the largest id in its table plus one, so once the newest row is
deleted (an erasure, a review's discard, the retention purge, a merge, a removed mailbox,
webhook or personal contact) the next row got the deleted one's id, and an integration that
knew the old one (from the API, a webhook, a page's link) took the new row for it. With
AUTOINCREMENT, SQLite counts the largest id a table ever had (in `sqlite_sequence`).
PostgreSQL's sequences never hand out an id twice: nothing changes there.

Each table is rebuilt (batch mode, foreign keys unenforced: see app.db.migration_engine) with
its rows, ids, constraints and indexes. Copying the rows sets the count to the largest id
there: an id deleted from the top before this upgrade may still be used once more.

Revision ID: 0013
Revises: 0012
"""

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Ids shown outside Mailroom, of rows that can be deleted. The decision log numbers its
# records itself (app/ledger.py), and the other tables' ids stay inside.
TABLES = (
    "companies",
    "contacts",
    "threads",
    "messages",
    "mailboxes",
    "personal_contacts",
    "webhook_subscriptions",
    "webhook_deliveries",
)


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)


def _rebuild(*, autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table in TABLES:
        indexes = _indexes(bind, table)
        # Batch mode copies what SQLite's reflection reads, which skips expression indexes
        # (contacts by lower(address), by lower names): those are made again below.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
            ):
                pass
        for name, sql in indexes.items():
            if name not in _indexes(bind, table):
                bind.exec_driver_sql(sql)


def _indexes(bind: sa.Connection, table: str) -> dict[str, str]:
    """The table's indexes as written (those of its constraints have no text), by name."""
    rows = bind.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
        "AND sql IS NOT NULL",
        (table,),
    )
    return {str(name): str(sql) for name, sql in rows}
