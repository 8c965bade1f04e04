"""Which schema a hub database has, and bringing it to this build's (Alembic, run by API).

A database is in one of these states (`SchemaStatus`):

    EMPTY     no tables at all: `upgrade` creates everything
    LEGACY    the tables of a build from before migrations, unstamped: `upgrade` recognises
              which revision they are (by comparing them with what that revision creates),
              stamps it, and migrates from there, in place
    BEHIND    stamped with an older revision of this build
    CURRENT   stamped with this build's head
    NEWER     stamped with a revision this build does not know (a newer build migrated it)
    FOREIGN   tables that are none of the above

The hub serves only a CURRENT database (`require_current`); nothing but `cloud-hub migrate`
changes a schema.
"""

from __future__ import annotations

import enum
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, inspect
from sqlalchemy.exc import OperationalError

from cloud_hub.errors import DatabaseUnavailable, SchemaMismatch

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
# The revisions a database from before migrations can be at (oldest first).
LEGACY_REVISIONS = ("0001", "0002")
MIGRATE_HINT = "run `cloud-hub migrate` with the same --data-dir / --database-url"

log = logging.getLogger("cloud_hub.store")


class SchemaStatus(enum.Enum):
    EMPTY = "empty"
    LEGACY = "legacy"
    BEHIND = "behind"
    CURRENT = "current"
    NEWER = "newer"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class SchemaState:
    status: SchemaStatus
    # The stamped revision, or for LEGACY the one the tables match.
    revision: str | None
    head: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MigrationReport:
    before: SchemaState
    revision: str


# A schema's shape as compared for recognition: table -> (column names, index names).
Shape = dict[str, tuple[frozenset[str], frozenset[str]]]


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _shape(connection: Connection) -> Shape:
    inspector = inspect(connection)
    shape: Shape = {}
    for table in inspector.get_table_names():
        if table == VERSION_TABLE:
            continue
        columns = frozenset(c["name"] for c in inspector.get_columns(table))
        # Only indexes made as such: PostgreSQL also lists those backing unique constraints.
        indexes = frozenset(
            str(i["name"])
            for i in inspector.get_indexes(table)
            if not i.get("duplicates_constraint")
        )
        shape[table] = (columns, indexes)
    return shape


@functools.cache
def revision_shape(revision: str) -> Shape:
    """What `revision` creates, by running the migrations on a scratch in-memory database."""
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            command.upgrade(_config(connection), revision)
            return _shape(connection)
    finally:
        engine.dispose()


def _differences(found: Shape, expected: Shape) -> str:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    parts = [f"missing table {t}" for t in missing] + [f"unknown table {t}" for t in extra]
    for table in sorted(set(found) & set(expected)):
        (cols, _), (want, _) = found[table], expected[table]
        parts += [f"{table} lacks column {c}" for c in sorted(want - cols)]
        parts += [f"{table} has unknown column {c}" for c in sorted(cols - want)]
    return "; ".join(parts) or "indexes differ"


def _stamped_state(revision: str, head: str) -> SchemaState:
    if revision == head:
        return SchemaState(SchemaStatus.CURRENT, revision, head)
    try:
        known = ScriptDirectory.from_config(_config()).get_revision(revision)
    except CommandError:
        known = None
    status = SchemaStatus.BEHIND if known is not None else SchemaStatus.NEWER
    return SchemaState(status, revision, head)


def schema_state(connection: Connection) -> SchemaState:
    head = head_revision()
    if VERSION_TABLE in inspect(connection).get_table_names():
        revision = MigrationContext.configure(connection).get_current_revision()
        if revision is not None:
            return _stamped_state(revision, head)
    shape = _shape(connection)
    if not shape:
        return SchemaState(SchemaStatus.EMPTY, None, head)
    for revision in reversed(LEGACY_REVISIONS):
        if shape == revision_shape(revision):
            return SchemaState(SchemaStatus.LEGACY, revision, head)
    detail = _differences(shape, revision_shape(LEGACY_REVISIONS[-1]))
    return SchemaState(SchemaStatus.FOREIGN, None, head, detail)


def _connect(engine: Engine) -> Connection:
    try:
        return engine.connect()
    except OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot reach the hub database: {first}") from None


def read_state(engine: Engine) -> SchemaState:
    with _connect(engine) as connection:
        return schema_state(connection)


def upgrade(engine: Engine) -> MigrationReport:
    """Bring the database to this build's head, in place. Refuses a NEWER or FOREIGN one."""
    with _connect(engine) as connection:
        before = schema_state(connection)
        if before.status is SchemaStatus.NEWER:
            raise SchemaMismatch(
                f"the hub database is at revision {before.revision}, newer than this build "
                f"({before.head}): run a newer cloud-hub"
            )
        if before.status is SchemaStatus.FOREIGN:
            raise SchemaMismatch(
                f"the database holds tables that are not a hub schema ({before.detail}); "
                "point --data-dir / --database-url at the hub's database"
            )
        config = _config(connection)
        if before.status is SchemaStatus.LEGACY:
            assert before.revision is not None
            log.info("unstamped hub database matches revision %s: stamping it", before.revision)
            command.stamp(config, before.revision)
            connection.commit()
        command.upgrade(config, "head")
        connection.commit()
        return MigrationReport(before=before, revision=schema_state(connection).revision or "")


def require_current(engine: Engine) -> SchemaState:
    """The database's state if it is this build's schema; else SchemaMismatch saying why."""
    state = read_state(engine)
    if state.status is SchemaStatus.CURRENT:
        return state
    if state.status is SchemaStatus.NEWER:
        raise SchemaMismatch(
            f"the hub database is at revision {state.revision}, newer than this build "
            f"({state.head}): run the cloud-hub that migrated it, or a newer one"
        )
    if state.status is SchemaStatus.FOREIGN:
        raise SchemaMismatch(f"the database is not a hub database ({state.detail})")
    where = {
        SchemaStatus.EMPTY: "has no hub schema",
        SchemaStatus.LEGACY: f"is from an older build (unstamped revision {state.revision})",
        SchemaStatus.BEHIND: f"is at revision {state.revision}",
    }[state.status]
    raise SchemaMismatch(f"the hub database {where}, this build needs {state.head}: {MIGRATE_HINT}")
