"""each owner's copy of a shared message names the decision that filed it

The same mail filed by several employees is one message with an owner row each (0016 gave
each its own state), and each submission is decided, and logged, for its own employee. But
only the message named a decision, the first filer's: a colleague's review queue and captures
explained their copy with a decision taken for someone else (another policy version perhaps,
other rules, another employee id). Each owner row now names the decision that filed, or last
changed, that owner's copy.

Upgrading names, for each copy, the newest decision logged for that owner that filed this
message (a receipt links the two), one with the copy's own outcome first; a capture chosen at
review is not linked to its message by a receipt, so such a copy names the decision that held
it. A copy whose decisions the retention purge removed names the message's decision, the best
that is left. Downgrading drops the column.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message_owners") as batch:
        batch.add_column(
            sa.Column(
                "decision_id",
                sa.Integer(),
                sa.ForeignKey("decisions.id", name="fk_message_owners_decision_id"),
                nullable=True,
            )
        )
        batch.create_index("ix_message_owners_decision_id", ["decision_id"], unique=False)
    owners = sa.table(
        "message_owners",
        sa.column("message_id", sa.Integer()),
        sa.column("employee_id", sa.Integer()),
        sa.column("outcome", sa.String()),
        sa.column("decision_id", sa.Integer()),
    )
    messages = sa.table("messages", sa.column("id", sa.Integer()), sa.column("decision_id"))
    receipts = sa.table(
        "receipts", sa.column("decision_id", sa.Integer()), sa.column("message_id", sa.Integer())
    )
    decisions = sa.table(
        "decisions",
        sa.column("id", sa.Integer()),
        sa.column("employee_id", sa.Integer()),
        sa.column("outcome", sa.String()),
    )
    own = (  # the newest decision logged for this owner that filed this message
        sa.select(sa.func.max(decisions.c.id))
        .join(receipts, receipts.c.decision_id == decisions.c.id)
        .where(
            receipts.c.message_id == owners.c.message_id,
            decisions.c.employee_id == owners.c.employee_id,
        )
    )
    of_message = sa.select(messages.c.decision_id).where(messages.c.id == owners.c.message_id)
    found = sa.func.coalesce(
        own.where(decisions.c.outcome == owners.c.outcome).scalar_subquery(),
        own.scalar_subquery(),
        of_message.scalar_subquery(),
    )
    op.execute(owners.update().values(decision_id=found))


def downgrade() -> None:
    with op.batch_alter_table("message_owners") as batch:
        batch.drop_index("ix_message_owners_decision_id")
        batch.drop_column("decision_id")
