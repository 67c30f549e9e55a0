"""Alembic environment for hpo's own tables. Run through hpo.store.migrations (or `hpo db upgrade`)."""

from alembic import context
from hpo.store.schema import VERSION_TABLE, metadata

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    if connection.dialect.name == "sqlite":
        # One write transaction for the whole upgrade, version stamp included: SQLite's DDL
        # otherwise commits statement by statement, and two processes upgrading a fresh file
        # at once both created hpo_jobs ("table hpo_jobs already exists"). The second now
        # waits for the first (busy timeout), then finds the tables at head.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # Optuna's tables live in the same database under their own alembic_version.
        include_name=lambda name, type_, parent: type_ != "table" or name.startswith("hpo_"),
    )
    with context.begin_transaction():
        context.run_migrations()
