"""Alembic's environment for the hub: always run on a connection handed in by the caller."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run the hub's migrations with `cloud-hub migrate`, not alembic's CLI")
    context.configure(
        connection=connection,
        # SQLite cannot ALTER most constraints: Alembic rebuilds the table ("batch" mode).
        render_as_batch=connection.dialect.name == "sqlite",
        # One transaction per revision: a failed step leaves the database at the last one.
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
