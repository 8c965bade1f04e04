"""Store-and-forward of outcome records: SQLite on the device, nothing lost while offline.

Every answer's `OutcomeRecord` is committed here before the answer leaves the agent (records
of concurrent requests share one commit). SQLite runs in WAL mode with ``synchronous=NORMAL``:
a commit survives the agent being killed (-9) at any moment; only a power cut can lose the last
commits (set ``synchronous=FULL`` through `durable=True` where that matters more than ~1 ms).

A `Deliverer` sends the oldest records to the hub in signed batches (``POST /v1/device-reports``)
and deletes exactly the ids the hub's signed ack lists: at least once, deduplicated at the hub.

Size cap and drop policy: at most `max_records` are kept; beyond, the OLDEST undelivered
records are dropped to make room (the newest tell more about the device now), and every drop is
counted in the file (`dropped`) and in `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from edge_agent.errors import HubUnavailable
from edge_agent.hub_pool import Hubs
from edge_agent.identity import DeviceIdentity
from escalade_protocol.device_reports import (
    NONCE_SIZE,
    REPORT_CONTENT_TYPE,
    DeviceReport,
    OutcomeRecord,
    verify_ack,
)
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.messages import AnswerReason

log = logging.getLogger("edge_agent.outbox")
OUTBOX_FILE = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('dropped', 0);
"""


_INSERT = "INSERT OR IGNORE INTO records (record_id, body) VALUES (?, ?)"


class Outbox:
    def __init__(self, path: Path, *, max_records: int = 100_000, durable: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self.path = path
        self.max_records = max_records
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        (self._depth,) = self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        self._pending: list[tuple[OutcomeRecord, asyncio.Future[None]]] = []
        self._flush_handle: asyncio.Handle | None = None
        self.added = asyncio.Event()

    @property
    def depth(self) -> int:
        return int(self._depth)

    @property
    def dropped(self) -> int:
        with self._lock:
            (value,) = self._db.execute(
                "SELECT value FROM counters WHERE name = 'dropped'"
            ).fetchone()
        return int(value)

    def add_many(self, records: Sequence[OutcomeRecord]) -> None:
        """Commit `records` in one transaction, dropping the oldest beyond the cap."""
        rows = [(r.record_id.bytes, r.encode()) for r in records]
        with self._lock:
            if len(rows) == 1 and self._depth < self.max_records:
                # One statement in autocommit mode: one commit, no BEGIN / COMMIT round trips.
                cur = self._db.execute(_INSERT, rows[0])
                self._depth += cur.rowcount
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.executemany(_INSERT, rows)
                # The depth is kept in memory (COUNT(*) is a scan): counted once at open.
                depth = self._depth + cur.rowcount
                excess = depth - self.max_records
                if excess > 0:
                    self._db.execute(
                        "DELETE FROM records WHERE seq IN "
                        "(SELECT seq FROM records ORDER BY seq LIMIT ?)",
                        (excess,),
                    )
                    self._db.execute(
                        "UPDATE counters SET value = value + ? WHERE name = 'dropped'", (excess,)
                    )
                    depth -= excess
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth = depth
        if excess > 0:
            log.warning("outbox full (%d records): dropped the %d oldest", depth, excess)

    async def add(self, record: OutcomeRecord, *, alone: bool = False) -> None:
        """Commit `record`; records added in the same turn of the loop share the commit.

        `alone`: no other answer is in flight, so the commit is made at once, without a hop.
        """
        if alone and not self._pending:
            self.add_many([record])
            self.added.set()
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((record, future))
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        await future

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, []
        try:
            # A commit in WAL mode with synchronous=NORMAL takes tens of microseconds: cheaper
            # inline than handing it to a thread (bench/local_path.py measures it).
            self.add_many([r for r, _ in pending])
        except sqlite3.Error as exc:
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in pending:
            if not future.done():
                future.set_result(None)
        self.added.set()

    def oldest(self, limit: int) -> list[OutcomeRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM records ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [OutcomeRecord.decode(body) for (body,) in rows]

    def remove(self, record_ids: Sequence[uuid.UUID]) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.executemany(
                "DELETE FROM records WHERE record_id = ?", [(r.bytes,) for r in record_ids]
            )
            self._db.execute("COMMIT")
            self._depth -= cur.rowcount
        return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


async def deliver_once(outbox: Outbox, client: Hubs, *, device: DeviceIdentity, batch: int) -> int:
    """Send one batch of the oldest records; delete what the hub acknowledged; return that.

    The breaker is asked first (no reading while the hub is away); reading, decoding and
    signing a batch run in a thread, off the event loop that answers applications.
    """
    if outbox.depth == 0:
        return 0
    if not client.hub_up:
        failure = client.status().failure or AnswerReason.HUB_UNREACHABLE
        raise HubUnavailable(failure, "hub calls paused by the circuit breaker")
    hub = client.attested or await client.ensure_attested()

    def prepare() -> tuple[list[OutcomeRecord], bytes]:
        records = outbox.oldest(batch)
        if not records:
            return records, b""
        report = DeviceReport(
            device_id=device.device_id,
            sent_at_ms=time.time_ns() // 1_000_000,
            nonce=os.urandom(NONCE_SIZE),
            hub_key_id=hub.key_id,
            items=tuple(records),
        ).sign(device.key)
        return records, report

    records, report = await asyncio.to_thread(prepare)
    if not records:
        return 0
    try:
        raw = await client.post("/v1/device-reports", report, REPORT_CONTENT_TYPE)
    except HubUnavailable as exc:
        if exc.code is not ErrorCode.UNKNOWN_HUB_KEY:
            raise
        # The hub restarted with new keys: attest it again; the next round sends the batch.
        await client.probe()
        return 0
    try:
        ack = verify_ack(raw, hub.keys.signing_key, report=report)
    except ProtocolError as exc:
        raise HubUnavailable(AnswerReason.BAD_ANSWER, f"hub ack rejected: {exc}") from None
    sent = {r.record_id for r in records}
    return await asyncio.to_thread(outbox.remove, [i for i in ack.known if i in sent])


async def deliver_forever(
    outbox: Outbox, client: Hubs, *, device: DeviceIdentity, batch: int, retry_s: float
) -> None:
    """Deliver while records wait; sleep until a record is added or a retry is due."""
    while True:
        outbox.added.clear()
        try:
            while await deliver_once(outbox, client, device=device, batch=batch) > 0:
                pass
        except HubUnavailable as exc:
            log.debug("outbox delivery paused: %s", exc)
            delay = max(client.retry_in(), retry_s)
            # Backing off (not waiting for an event): new records do not bring the hub back.
            await asyncio.sleep(delay)
            continue
        if outbox.depth == 0:
            await outbox.added.wait()
