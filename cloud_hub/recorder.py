"""Durable escalation records with group commit.

An answer leaves the hub only after its record is committed (the record's unique
(device, nonce) key is also the replay check). Records that arrive together are committed
together, in one transaction: under load many answers share one commit, and with one request
in flight the cost is a single insert.

Where the commit runs depends on the database. SQLite is a local file in WAL mode whose commit
does not wait for the disk (synchronous=NORMAL): a batch commits in tens of microseconds, less
than handing it to a thread and back, so it runs on the event loop, once per loop iteration.
A networked database (PostgreSQL) commits on a writer thread, so the loop never waits on the
network.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

from cloud_hub.store import EscalationRecord, Store
from escalade_protocol.errors import ErrorCode, ProtocolError

MAX_BATCH = 256

Waiter = Callable[[BaseException | None], None]


def _replayed() -> ProtocolError:
    return ProtocolError(ErrorCode.REPLAYED_NONCE, "this envelope's nonce was already used")


def _commit(store: Store, batch: list[tuple[EscalationRecord, Waiter]]) -> None:
    """Commit a batch and tell every waiter how its record fared."""
    try:
        inserted = store.record_escalations([record for record, _ in batch])
    except Exception as exc:  # the database failed: every waiter must hear of it
        for _, done in batch:
            done(exc)
        return
    for (_, done), ok in zip(batch, inserted, strict=True):
        done(None if ok else _replayed())


class EscalationRecorder:
    """Group commit on the event loop (SQLite) or on a writer thread (networked databases)."""

    def __init__(self, store: Store, *, on_loop: bool | None = None) -> None:
        self._store = store
        self._on_loop = store.is_local if on_loop is None else on_loop
        self._pending: list[tuple[EscalationRecord, Waiter]] = []
        self._queue: queue.SimpleQueue[tuple[EscalationRecord, Waiter] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if not self._on_loop:
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()

    async def record(self, record: EscalationRecord) -> None:
        """Return once the record is committed; raise `replayed_nonce` for a repeated nonce."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        if self._on_loop:
            if not self._pending:
                # Commit after the callbacks already scheduled: requests read in this loop
                # iteration join the same transaction.
                loop.call_soon(self._flush)
            self._pending.append((record, done))
        else:

            def done_threadsafe(error: BaseException | None) -> None:
                loop.call_soon_threadsafe(done, error)

            self._queue.put((record, done_threadsafe))
        await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), MAX_BATCH):
            _commit(self._store, batch[start : start + MAX_BATCH])

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread (if any)."""
        if self._pending:
            self._flush()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            _commit(self._store, batch)
            if stop:
                return
