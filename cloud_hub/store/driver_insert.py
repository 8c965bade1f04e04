"""One INSERT statement run through the database driver itself, for the hub's hot path.

SQLAlchemy's execution layer costs about 100 µs per statement on this hardware, three times
SQLite's own insert and commit; the hub writes one record per escalation, so that write goes to
the driver directly. The SQL text and the value conversions still come from SQLAlchemy, for
whichever dialect the engine speaks, so SQLite and PostgreSQL take the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table, insert


class DriverInsert:
    def __init__(self, engine: Engine, table: Table, keys: Sequence[str]) -> None:
        self._engine = engine
        compiled = insert(table).compile(dialect=engine.dialect, column_keys=list(keys))
        self.sql = compiled.string
        self._order = list(compiled.positiontup or []) if compiled.positional else None
        self._convert: dict[str, Callable[[Any], Any]] = {}
        for key in keys:
            processor = table.c[key].type.bind_processor(engine.dialect)
            if processor is not None:
                self._convert[key] = processor
        self._integrity_error: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError

    def _params(self, row: Mapping[str, object]) -> Mapping[str, object] | tuple[object, ...]:
        values = {k: (self._convert[k](v) if k in self._convert else v) for k, v in row.items()}
        if self._order is None:
            return values
        return tuple(values[k] for k in self._order)

    def insert_all(self, rows: Sequence[Mapping[str, object]]) -> bool:
        """Insert every row in one transaction; False (and nothing written) on a conflict."""
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                params: Any = [self._params(row) for row in rows]
                cursor.executemany(self.sql, params)
                connection.commit()
            except self._integrity_error:
                connection.rollback()
                return False
            finally:
                cursor.close()
        finally:
            connection.close()  # back to the pool
        return True
