"""The escalation record's INSERT, run through the database driver itself: the hub's hot path.

SQLAlchemy's execution layer costs about 100 µs per statement on this hardware, three times
SQLite's own insert and commit; the hub writes one record per escalation, so that write goes to
the driver directly. The SQL text and the value conversions still come from SQLAlchemy, for
whichever dialect the engine speaks, so SQLite and PostgreSQL take the same path.

The statement inserts a record only while its device is active:

    INSERT INTO escalations (...) SELECT :values... WHERE EXISTS
        (SELECT 1 FROM devices WHERE device_id = :device_id AND status = 'active')

so a revocation or quarantine committed by anyone (an operator's command, another replica)
refuses every record committed after it, whatever this replica has cached: the answer leaves
only after its record commits. The device lookup is a primary-key probe inside the same
transaction, a few microseconds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table, bindparam, exists, insert, literal_column, select


class RowResult(enum.Enum):
    INSERTED = "inserted"
    # The (device, nonce) key exists: a replay.
    REPLAYED = "replayed"
    # The device is not (or no longer) active: nothing was written.
    DEVICE_INACTIVE = "device_inactive"


class DriverInsert:
    def __init__(self, engine: Engine, table: Table, devices: Table, keys: Sequence[str]) -> None:
        values = [bindparam(key, type_=table.c[key].type) for key in keys]
        device_active = exists().where(
            devices.c.device_id == bindparam("device_id", type_=devices.c.device_id.type),
            devices.c.status == literal_column("'active'"),
        )
        statement = insert(table).from_select(list(keys), select(*values).where(device_active))
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = compiled.string
        self._order = list(compiled.positiontup or []) if compiled.positional else None
        self._convert: dict[str, Callable[[Any], Any]] = {}
        for key in keys:
            processor = table.c[key].type.bind_processor(engine.dialect)
            if processor is not None:
                self._convert[key] = processor
        self.integrity_error: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError

    def _converted(self, values: Mapping[str, object]) -> dict[str, object]:
        convert = self._convert
        return {k: (convert[k](v) if k in convert else v) for k, v in values.items()}

    def _params(
        self, row: Mapping[str, object], constants: Mapping[str, object]
    ) -> Mapping[str, object] | tuple[object, ...]:
        values = self._converted(row)
        values.update(constants)
        if self._order is None:
            return values
        return tuple(values[k] for k in self._order)

    def insert_all(
        self,
        connection: Any,
        rows: Sequence[Mapping[str, object]],
        constants: Mapping[str, object] | None = None,
    ) -> bool:
        """Insert every row in one transaction on a DBAPI connection. True if all were
        written; False (and nothing written) if any repeated a key or had an inactive device.
        Any other database error propagates, after a rollback. `constants` are values shared
        by every row (the batch's receive time), converted once rather than per row."""
        shared = self._converted(constants or {})
        cursor = connection.cursor()
        try:
            params: Any = [self._params(row, shared) for row in rows]
            cursor.executemany(self.sql, params)
            if cursor.rowcount != len(rows):
                connection.rollback()
                return False
            connection.commit()
        except self.integrity_error:
            connection.rollback()
            return False
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
        return True

    def insert_one(
        self,
        connection: Any,
        row: Mapping[str, object],
        constants: Mapping[str, object] | None = None,
    ) -> RowResult:
        """Insert one row in its own transaction and say how it fared."""
        cursor = connection.cursor()
        try:
            cursor.execute(self.sql, self._params(row, self._converted(constants or {})))
            inserted = cursor.rowcount == 1
            connection.commit()
        except self.integrity_error:
            connection.rollback()
            return RowResult.REPLAYED
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
        return RowResult.INSERTED if inserted else RowResult.DEVICE_INACTIVE
