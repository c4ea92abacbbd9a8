"""the decision log's hash is not indexed: the id it covers is the primary key

Each record's hash is computed over its id among other fields, so two records with one hash
would have one id, which the primary key already refuses; and nothing looks a record up by
its hash (verification walks the ids). The unique index only cost every decision a write to a
random page of it.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The constraint as 0001 made it has no name on SQLite: batch mode finds it under this
# convention's name. One a downgrade made again has a name, and is found under that.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        on_hash = [
            c["name"]
            for c in sa.inspect(bind).get_unique_constraints("decisions")
            if c["column_names"] == ["hash"]
        ]
        with op.batch_alter_table("decisions", naming_convention=NAMING) as batch:
            for name in on_hash:
                batch.drop_constraint(name or "uq_decisions_hash", type_="unique")
    else:
        op.drop_constraint("decisions_hash_key", "decisions", type_="unique")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("decisions") as batch:
            batch.create_unique_constraint("decisions_hash_key", ["hash"])
    else:
        op.create_unique_constraint("decisions_hash_key", "decisions", ["hash"])
