"""The hub's files on disk: the data dir 0700 and the SQLite database (and its -wal and -shm)
0600, whatever the umask; a directory or file we cannot make so is refused with the reason.

SQLite creates the -wal and -shm files with the database file's own permissions, so creating
the database 0600 before SQLite opens it is what keeps those private too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cloud_hub.errors import DatabaseNotFound, DatabaseUnavailable

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _make_private(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot make {path} mode {mode:o}: {exc.strerror}") from None


def prepare_data_dir(path: Path, *, create: bool) -> Path:
    """The data dir, 0700; created only when `create` (else a missing one is refused)."""
    path = path.expanduser()
    if not path.exists():
        if not create:
            raise DatabaseNotFound(
                f"no hub data dir at {path}: check the path, or create it with "
                f"`cloud-hub migrate --data-dir {path}`"
            )
        try:
            path.mkdir(parents=True, mode=DIR_MODE)
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot create {path}: {exc.strerror}") from None
    if not path.is_dir():
        raise DatabaseUnavailable(f"{path} is not a directory")
    _make_private(path, DIR_MODE)
    if not os.access(path, os.W_OK | os.X_OK):
        raise DatabaseUnavailable(f"{path} is not writable by this user")
    return path


def prepare_sqlite_file(path: Path, *, create: bool) -> None:
    """Make the database file (and any side files) 0600; create it 0600 when `create`."""
    if not path.exists():
        if not create:
            raise DatabaseNotFound(
                f"no hub database at {path}: check the path, or create it with "
                f"`cloud-hub migrate --data-dir {path.parent}`"
            )
        if not path.parent.is_dir():
            raise DatabaseNotFound(f"no directory {path.parent} for the database {path.name}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
        except FileExistsError:
            pass
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot create {path}: {exc.strerror}") from None
    _make_private(path, FILE_MODE)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            _make_private(side, FILE_MODE)
