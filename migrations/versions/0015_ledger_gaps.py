"""the decision log's retention purge removes what has expired, not only a prefix

The purge removed the log's oldest records as one prefix, which stopped at the oldest record
a stored message still refers to: in a deployment that keeps its captures, the first one, so
`decision_days` never removed anything after it. It now removes every expired record no
stored message refers to, which leaves gaps in the chain. This table names each run of
records a purge removed: its first and last id, and the last one's hash. Verification checks
that the runs account for every id missing between two records that are left, and the second
one's link against the hash of the run before it. Each purge record carries a digest of its
runs, so a run added here by hand does not hide a record removed by hand.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_gaps",
        sa.Column("through_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("from_id", sa.Integer(), nullable=False),
        sa.Column("through_hash", sa.String(64), nullable=False),
        sa.Column("purge_id", sa.Integer(), nullable=False),
    )
    op.create_index("ix_ledger_gaps_purge_id", "ledger_gaps", ["purge_id"], unique=False)


def downgrade() -> None:
    op.drop_table("ledger_gaps")
