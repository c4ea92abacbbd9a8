"""each owner's copy of a shared message has its own state: kept, or waiting for review

One message row stands for the same mail filed by several employees (message_owners), but
whether it waited for review, and until when, was the message's: one owner's capture at
review took every colleague's copy out of their review queue and into their captures, and
the hold purge removed every copy at the first one's deadline. Each owner row now says what
that owner's decision kept (`capture`, `metadata_only` or `hold`) and, while it waits, when
its review period ends. Upgrading gives every owner their message's outcome and period (the
owners of a held message are held). Downgrading keeps the message's own outcome: a copy
still waiting beside a colleague's capture then reads as captured, as it did before.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message_owners") as batch:
        batch.add_column(
            sa.Column("outcome", sa.String(16), nullable=False, server_default="capture")
        )
        batch.add_column(sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))
    owners = sa.table(
        "message_owners",
        sa.column("message_id", sa.Integer()),
        sa.column("outcome", sa.String()),
        sa.column("held_until", sa.DateTime(timezone=True)),
    )
    messages = sa.table(
        "messages",
        sa.column("id", sa.Integer()),
        sa.column("outcome", sa.String()),
        sa.column("held_until", sa.DateTime(timezone=True)),
    )
    of_message = messages.c.id == owners.c.message_id
    op.execute(
        owners.update().values(
            outcome=sa.select(messages.c.outcome).where(of_message).scalar_subquery(),
            held_until=sa.select(messages.c.held_until)
            .where(of_message, messages.c.outcome == "hold")
            .scalar_subquery(),
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("message_owners") as batch:
        batch.drop_column("held_until")
        batch.drop_column("outcome")
