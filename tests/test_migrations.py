"""Schema migrations on real databases: the first revision is the schema older builds made,
an unstamped database from such a build upgrades in place, and the hub serves nothing else."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import legacy_schema
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, insert, inspect, text

from cloud_hub.audit import LegacyEvidence
from cloud_hub.errors import DatabaseNotFound, SchemaMismatch
from cloud_hub.store import Store, migrate_database, schema_version
from cloud_hub.store.schema import metadata
from cloud_hub.store.schema_version import SchemaStatus


def _engine(url: str) -> Engine:
    return create_engine(url)


def _describe(engine: Engine) -> dict[str, object]:
    """Everything about a schema that a migration could get wrong, table by table."""
    inspector = inspect(engine)
    described: dict[str, object] = {}
    for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        described[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(
                (str(u["name"]), tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (str(i["name"]), tuple(map(str, i["column_names"])), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
        }
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version'")
            ).all()
        described["sqlite_master"] = sorted(
            (name, re.sub(r"\s+", " ", sql or "").strip()) for name, sql in rows
        )
    return described


def _legacy_database(url: str, *, with_index: bool) -> None:
    """A database as the code at 1fa28a5 left it (create_all, no stamp), holding one device,
    its token, an escalation and an audit entry; `with_index` as main's create_all left it."""
    engine = _engine(url)
    try:
        legacy_schema.metadata.create_all(engine)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(
                insert(legacy_schema.devices).values(
                    device_id=str(DEVICE),
                    public_key=b"k" * 32,
                    profile="x86-64-cpu",
                    status="active",
                    enrolled_at=now,
                )
            )
            conn.execute(
                insert(legacy_schema.enrollment_tokens).values(
                    token_hash="a" * 64,
                    created_at=now,
                    expires_at=now + timedelta(hours=1),
                    used_at=now,
                    device_id=str(DEVICE),
                )
            )
            conn.execute(
                insert(legacy_schema.escalations).values(
                    device_id=str(DEVICE),
                    nonce=b"n" * 16,
                    seq=1,
                    sent_at_ms=1,
                    received_at=now,
                    model_id="digits",
                    model_version=1,
                    label=3,
                    request_digest=b"d" * 32,
                )
            )
            conn.execute(
                insert(legacy_schema.audit_events).values(
                    at=now,
                    device_id=str(DEVICE),
                    action="quarantine",
                    actor="hub",
                    reason="old entry",
                    evidence='{"cusum": 9.5, "messages": 40}',
                )
            )
            if with_index:
                conn.execute(
                    text("CREATE INDEX ix_escalations_sent_at_ms ON escalations (sent_at_ms)")
                )
    finally:
        engine.dispose()


DEVICE = uuid.UUID("00000000-0000-4000-8000-000000000001")


def test_first_revision_is_exactly_the_schema_before_migrations(database_url: str) -> None:
    legacy = _engine(database_url)
    try:
        legacy_schema.metadata.create_all(legacy)
        made_by_old_code = _describe(legacy)
        legacy_schema.metadata.drop_all(legacy)
        with legacy.begin() as conn:
            from alembic import command

            command.upgrade(schema_version._config(conn), "0001")
        assert _describe(legacy) == made_by_old_code
    finally:
        legacy.dispose()


def test_head_is_what_schema_py_declares(database_url: str) -> None:
    """The migrations and the tables the code uses never drift apart."""
    report = migrate_database(database_url)
    assert report.before.status is SchemaStatus.EMPTY
    assert report.revision == schema_version.head_revision()
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize(("with_index", "revision"), [(False, "0001"), (True, "0002")])
def test_an_unstamped_database_from_an_older_build_upgrades_in_place(
    database_url: str, with_index: bool, revision: str
) -> None:
    _legacy_database(database_url, with_index=with_index)
    with pytest.raises(SchemaMismatch, match="cloud-hub migrate"):
        Store.open(database_url)
    engine = _engine(database_url)
    try:
        state = schema_version.read_state(engine)
        assert (state.status, state.revision) == (SchemaStatus.LEGACY, revision)
    finally:
        engine.dispose()

    report = migrate_database(database_url)
    assert report.before.status is SchemaStatus.LEGACY
    assert report.before.revision == revision
    store = Store.open(database_url)
    try:
        device = store.get_device(DEVICE)
        assert device is not None
        assert device.profile == "x86-64-cpu"
        assert store.counts().escalations == 1
        (old,) = store.audit_log()
        assert old.reason == "old entry"
        assert old.evidence == LegacyEvidence(raw='{"cusum": 9.5, "messages": 40}')
        # The entries from before the chain were linked by the migration.
        assert store.verify_audit_chain().ok
        token = store.list_tokens()[0]
        assert (token.uses_left, token.auto_approve) == (0, True)
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("escalations")}
        assert "ix_escalations_sent_at_ms" in indexes
    finally:
        store.close()


def test_a_newer_database_is_refused_and_not_touched(database_url: str) -> None:
    migrate_database(database_url)
    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaMismatch, match="newer than this build"):
        Store.open(database_url)
    with pytest.raises(SchemaMismatch, match="newer than this build"):
        migrate_database(database_url)


def test_foreign_tables_are_refused_naming_the_difference(database_url: str) -> None:
    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE devices (device_id VARCHAR(36) PRIMARY KEY)"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaMismatch, match="missing table escalations"):
        migrate_database(database_url)


def test_opening_a_missing_sqlite_database_creates_nothing(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with pytest.raises(DatabaseNotFound, match="cloud-hub migrate"):
        Store.open(f"sqlite:///{tmp_path / 'hub.db'}")
    assert list(tmp_path.iterdir()) == []


def test_the_newest_revision_downgrades_to_the_one_before(database_url: str) -> None:
    from alembic import command

    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            command.upgrade(schema_version._config(conn), "0002")
        at_0002 = _describe(engine)
        with engine.begin() as conn:
            command.upgrade(schema_version._config(conn), "head")
            command.downgrade(schema_version._config(conn), "0002")
        after = _describe(engine)
        # SQLite's batch mode rebuilds tables, and writes their names quoted: compare the DDL
        # with the quotes taken out (the reflected structure must be identical as it is).
        if "sqlite_master" in after:
            for described in (after, at_0002):
                described["sqlite_master"] = [
                    (name, sql.replace('"', ""))
                    for name, sql in described["sqlite_master"]  # type: ignore[attr-defined]
                ]
        assert after == at_0002
    finally:
        engine.dispose()


def test_a_wheel_carries_every_migration_file() -> None:
    """The migrations are package data: every file under migrations/ matches a pattern."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["cloud_hub.store.migrations"]
    migrations = schema_version.MIGRATIONS_DIR
    files = [
        p.relative_to(migrations).as_posix()
        for p in migrations.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert "env.py" in files
    assert len([f for f in files if f.startswith("versions/")]) >= 3
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
