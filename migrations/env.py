"""Alembic environment: runs migrations online against the configured URL, on SQLite with
foreign keys unenforced while tables are rebuilt, then checked (see app.db.migration_engine)."""

from __future__ import annotations

from alembic import context

from app.db import check_references, migration_engine
from app.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url is set by app.db.alembic_config"
engine = migration_engine(url)
try:  # a failed migration too leaves no connection open (in-process callers: tests)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            # SQLite's DDL is transactional too: all of an upgrade is committed, or none of it.
            transactional_ddl=True,
        )
        with context.begin_transaction():
            migration = context.get_context()
            before = migration.get_current_heads()
            context.run_migrations()
            if migration.get_current_heads() != before:  # a full scan: only after a change
                check_references(connection)
finally:
    engine.dispose()
