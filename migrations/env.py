"""Alembic environment: runs migrations with the service's own engine settings."""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import text

from api.config import Settings
from api.store.db import make_engine
from api.store.models import Base

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata
# An arbitrary constant: serialises concurrent upgrades of one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x0F5FAB01


def _database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # The write option makes SQLite start with BEGIN IMMEDIATE, so two processes
    # upgrading at once run one after the other and the second finds nothing to do.
    base_engine = make_engine(_database_url())
    engine = base_engine.execution_options(ovs_fabric_write=True)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # SQLite alters a table by copying it and dropping the old one, which
                # foreign keys referencing it forbid; the check is off for the
                # upgrade (a PRAGMA that only works outside a transaction, hence the
                # driver connection) and the keys are verified before it commits.
                driver = connection.connection.driver_connection
                assert driver is not None
                driver.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                # Our engine emits BEGIN itself, so SQLite DDL is transactional
                # too: a failed upgrade leaves no half-built schema behind.
                transactional_ddl=True,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                    )
                context.run_migrations()
                if connection.dialect.name == "sqlite":
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
    finally:
        base_engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
