"""an index for finding a contact by its address in any case: contacts by lower(address)

One person writes as Jane.Doe@acme.example and as jane.doe@acme.example; filing finds the
contact either way. No row changes: contacts already split by case stay two, and the
duplicates page lists them (`same-person`) for a merge.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_contacts_address_lower", "contacts", [sa.text("lower(address)")])


def downgrade() -> None:
    op.drop_index("ix_contacts_address_lower", table_name="contacts")
