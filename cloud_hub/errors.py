"""Hub start-up and database errors; request-level errors are `escalade_protocol.ProtocolError`.

HubError                    base
├── NoTeeError              no attester is available and simulation was not allowed
└── DatabaseError           the hub's database cannot be used as it is
    ├── DatabaseNotFound    no data dir / database file there (a typo, or never migrated)
    ├── DatabaseUnavailable the database server cannot be reached, or the files not secured
    └── SchemaMismatch      the schema is not this build's: unmigrated, older, newer or foreign

Each message is one line that says what to run.
"""

from __future__ import annotations


class HubError(Exception):
    """The hub cannot start or run as configured."""


class NoTeeError(HubError):
    pass


class DatabaseError(HubError):
    pass


class DatabaseNotFound(DatabaseError):
    pass


class DatabaseUnavailable(DatabaseError):
    pass


class SchemaMismatch(DatabaseError):
    pass
