"""people, threads, contact history and attachments

Revision ID: 0007
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("first_name", sa.String(100), nullable=False, server_default=""))
        batch.add_column(sa.Column("last_name", sa.String(100), nullable=False, server_default=""))
        batch.add_column(sa.Column("title", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("phone", sa.String(50), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("organization", sa.String(200), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("signature_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("undeliverable_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("merged_into_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_contacts_merged_into_id",
            "contacts",
            ["merged_into_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index("ix_contacts_last_name", ["last_name"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("thread_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_messages_thread_id", "threads", ["thread_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_messages_thread_id", ["thread_id"])
    op.create_table(
        "contact_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("old_value", sa.String(length=320), nullable=False),
        sa.Column("new_value", sa.String(length=320), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_contact_changes_contact_id", "contact_changes", ["contact_id"])
    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=127), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_attachments_message_id", "attachments", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_attachments_message_id", table_name="attachments")
    op.drop_table("attachments")
    op.drop_index("ix_contact_changes_contact_id", table_name="contact_changes")
    op.drop_table("contact_changes")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_thread_id")
        batch.drop_constraint("fk_messages_thread_id", type_="foreignkey")
        batch.drop_column("thread_id")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_index("ix_contacts_last_name")
        batch.drop_constraint("fk_contacts_merged_into_id", type_="foreignkey")
        for column in (
            "merged_into_id",
            "undeliverable_since",
            "organization",
            "signature_at",
            "phone",
            "title",
            "last_name",
            "first_name",
        ):
            batch.drop_column(column)
    op.drop_table("threads")
