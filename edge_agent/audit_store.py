"""The inputs behind recent escalations, kept (encrypted) for the hub's audit window.

Every escalated input is committed to in its envelope (`escalade_protocol.provenance`); to be
able to reveal it when the hub audits that escalation, the agent keeps the input and its salt
for `window_s` (default 10 minutes), then purges them. The store is bounded (`max_entries`,
the oldest go first), a SQLite file created 0600, and each row is AES-256-GCM encrypted under a
key of its own (``audit.key``, 0600) with the request digest as associated data, so a copy of
the file alone shows neither inputs nor which digest an input belongs to beyond its own row.
Used on the event loop only (an insert is a few tens of µs).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from escalade_protocol.provenance import SALT_SIZE, Revealed
from escalade_protocol.tensor import Tensor

AUDIT_STORE_FILE = "audit-inputs.sqlite3"
AUDIT_KEY_FILE = "audit.key"
_NONCE = 12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    request_digest BLOB PRIMARY KEY,
    expires_at REAL NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_inputs_expires ON inputs (expires_at);
"""


def _private_file(path: Path) -> None:
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def _load_or_create_key(path: Path) -> bytes:
    if path.exists():
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"{path} is not a 32-byte key; delete it to start a new audit store")
        return key
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


@dataclass(frozen=True, slots=True)
class StoreCounts:
    held: int
    purged: int


class AuditStore:
    def __init__(
        self,
        data_dir: Path,
        *,
        window_s: float = 600.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / AUDIT_STORE_FILE
        _private_file(path)
        self._aead = AESGCM(_load_or_create_key(data_dir / AUDIT_KEY_FILE))
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        self.purged = 0
        (self._held,) = self._db.execute("SELECT COUNT(*) FROM inputs").fetchone()

    def put(self, request_digest: bytes, revealed: Revealed) -> None:
        nonce = os.urandom(_NONCE)
        plaintext = revealed.salt + revealed.input.encode()
        sealed = nonce + self._aead.encrypt(nonce, plaintext, request_digest)
        expires = self._clock() + self.window_s
        self._held += self._db.execute(
            "INSERT OR IGNORE INTO inputs VALUES (?, ?, ?)", (request_digest, expires, sealed)
        ).rowcount
        if self._held > self.max_entries:
            self._held -= self._db.execute(
                "DELETE FROM inputs WHERE request_digest IN "
                "(SELECT request_digest FROM inputs ORDER BY expires_at LIMIT ?)",
                (self._held - self.max_entries,),
            ).rowcount

    def get(self, request_digest: bytes) -> Revealed | None:
        """The input and salt behind an escalation, while within the window; else None."""
        row = self._db.execute(
            "SELECT sealed FROM inputs WHERE request_digest = ? AND expires_at > ?",
            (request_digest, self._clock()),
        ).fetchone()
        if row is None:
            return None
        sealed: bytes = row[0]
        try:
            plaintext = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], request_digest)
        except InvalidTag:
            return None
        return Revealed(salt=plaintext[:SALT_SIZE], input=Tensor.decode(plaintext[SALT_SIZE:]))

    def purge(self) -> int:
        """Delete inputs past the window; returns how many."""
        deleted = self._db.execute(
            "DELETE FROM inputs WHERE expires_at <= ?", (self._clock(),)
        ).rowcount
        self.purged += deleted
        self._held -= deleted
        return deleted

    def counts(self) -> StoreCounts:
        return StoreCounts(held=self._held, purged=self.purged)

    def close(self) -> None:
        self._db.close()
