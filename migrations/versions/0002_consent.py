"""consent: suppression list, personal contacts, private tags

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("address_token", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address_token"),
    )
    op.create_table(
        "personal_contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("employee_id", sa.Integer(), nullable=False),
        sa.Column("address_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["employee_id"], ["employees.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("employee_id", "address_token"),
    )
    op.create_index(
        "ix_personal_contacts_address_token", "personal_contacts", ["address_token"], unique=False
    )
    with op.batch_alter_table("employees") as batch:
        batch.add_column(
            sa.Column("private_tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("employees") as batch:
        batch.drop_column("private_tags")
    op.drop_index("ix_personal_contacts_address_token", table_name="personal_contacts")
    op.drop_table("personal_contacts")
    op.drop_table("suppressions")
