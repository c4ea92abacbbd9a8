"""an index for the likely-job-move lookup: contacts by lower(first_name), lower(last_name)

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_contacts_name_lower",
        "contacts",
        [sa.text("lower(last_name)"), sa.text("lower(first_name)")],
    )


def downgrade() -> None:
    op.drop_index("ix_contacts_name_lower", table_name="contacts")
