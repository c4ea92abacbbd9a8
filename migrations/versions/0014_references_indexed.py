"""every reference to a message or a decision record is indexed

Deleting a row makes the database find the rows that refer to it (to refuse the deletion,
or to set their reference to NULL): without an index on the referring column, SQLite and
PostgreSQL alike scan that whole table, once for each row deleted. Receipts (one for every
message ever decided, dropped ones included) refer to their message and decision, messages
to their decision, contact changes to their message, and merged contacts to the one they
went into: the hold purge, an erasure, a review's discard and the decision log's purge
deleted under the write lock the listener waits on, and 2,000 deletions against 100,000
referring rows took 29 s on SQLite (0.04 s with the index). Every other reference is
indexed too, as a rule (tests/test_schema_and_ledger.py).

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("messages", "decision_id"),
    ("receipts", "decision_id"),
    ("receipts", "message_id"),
    ("contact_changes", "message_id"),
    ("contacts", "merged_into_id"),
    ("employee_aliases", "employee_id"),  # these four tables are small: for the rule's sake
    ("api_tokens", "employee_id"),
    ("login_links", "employee_id"),
    ("web_sessions", "api_token_id"),
)


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def downgrade() -> None:
    for table, column in INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
