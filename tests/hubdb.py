"""Hub databases for tests: created through the migrations, as an operator's would be."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from cloud_hub.store import Store, sqlite_url


def migrated_data_dir(data_dir: Path) -> Path:
    """`data_dir` holding a fresh hub database at this build's schema (`cloud-hub migrate`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    Store.open(sqlite_url(data_dir), migrate=True).close()
    return data_dir


def reset_postgres(url: str) -> None:
    """Drop everything in the test server's public schema (tables, triggers, Alembic's stamp),
    leaving it as a fresh database for the next test."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
