"""Dynamic batching of the hub model, as Triton's dynamic batcher does it.

Concurrent escalations that passed their checks queue here; the batcher runs them as one
`session.run` of up to `max_batch_size` embeddings. A batch starts as soon as the model is free
and either the batch is full or its oldest request has waited `max_queue_delay_s` (0: run what
is queued now, never waiting for company). While a batch runs, new requests queue for the
next: under load batches grow by themselves, with one request in flight nothing waits.

A slow model runs on its own thread, so the loop keeps accepting while it works; a fast one
(`executor=None`) runs on the loop, where a thread hop would cost more than the model. A batch
that fails fails only its own requests, with `inference_failed`. Used on the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from escalade_protocol.errors import ErrorCode, ProtocolError

log = logging.getLogger("cloud_hub")

F32 = npt.NDArray[np.float32]
RunBatch = Callable[[F32], F32]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_queue_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or not 0 <= self.max_queue_delay_s <= 1:
            raise ValueError(
                "max batch size must be >= 1 and max queue delay between 0 and 1 s, "
                f"got {self.max_batch_size} and {self.max_queue_delay_s}"
            )


@dataclass(slots=True)
class _Queued:
    embedding: F32
    future: asyncio.Future[F32]
    queued_at: float


class DynamicBatcher:
    def __init__(
        self,
        run_batch: RunBatch,
        config: BatchingConfig,
        *,
        executor: Executor | None,
        on_batch: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run_batch = run_batch
        self._config = config
        self._executor = executor
        self._on_batch = on_batch or (lambda _size: None)
        self._clock = clock
        self._queue: list[_Queued] = []
        self._running = False
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None

    async def infer(self, embedding: F32, *, alone: bool = False) -> F32:
        """Class probabilities for one embedding, computed in some batch.

        `alone`: the caller knows no other request is on its way here (one in flight). A
        model that runs on the loop then runs at once, without the hop through the queue."""
        if alone and self._executor is None and not self._queue:
            self._on_batch(1)
            outcome = self._run_safely(embedding.reshape(1, -1))
            if isinstance(outcome, Exception):
                log.error("hub model failed on a batch of 1: %r", outcome)
                raise ProtocolError(ErrorCode.INFERENCE_FAILED, "the hub model failed")
            row: F32 = outcome[0]
            return row
        loop = asyncio.get_running_loop()
        future: asyncio.Future[F32] = loop.create_future()
        self._queue.append(_Queued(embedding, future, self._clock()))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._running or not self._queue:
            return
        if len(self._queue) >= self._config.max_batch_size:
            self._cancel_scheduled()
            self._scheduled = loop.call_soon(self._start)
            return
        if self._scheduled is not None:
            return
        waited = self._clock() - self._queue[0].queued_at
        delay = self._config.max_queue_delay_s - waited
        # call_soon even without a delay: requests read in this loop iteration join the batch.
        self._scheduled = (
            loop.call_later(delay, self._start) if delay > 0 else loop.call_soon(self._start)
        )

    def _cancel_scheduled(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    def _start(self) -> None:
        self._scheduled = None
        if self._running or not self._queue:
            return
        size = self._config.max_batch_size
        batch, self._queue = self._queue[:size], self._queue[size:]
        self._on_batch(len(batch))
        stacked = np.stack([item.embedding for item in batch])
        if self._executor is None:
            self._finish(batch, self._run_safely(stacked))
            self._schedule(asyncio.get_running_loop())
            return
        self._running = True
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(self._executor, self._run_safely, stacked)
        running.add_done_callback(lambda f: self._done(batch, f))

    def _done(self, batch: list[_Queued], running: asyncio.Future[F32 | Exception]) -> None:
        self._running = False
        try:
            outcome = running.result()
        except Exception as exc:  # the executor itself failed (shut down)
            outcome = exc
        self._finish(batch, outcome)
        self._schedule(asyncio.get_running_loop())

    def _run_safely(self, stacked: F32) -> F32 | Exception:
        try:
            probabilities = self._run_batch(stacked)
        except Exception as exc:  # reported to this batch's requests only
            return exc
        if probabilities.shape[0] != stacked.shape[0]:
            return ValueError(
                f"model returned {probabilities.shape[0]} rows for {stacked.shape[0]} inputs"
            )
        return probabilities

    def _finish(self, batch: list[_Queued], outcome: F32 | Exception) -> None:
        if isinstance(outcome, Exception):
            log.error("hub model failed on a batch of %d: %r", len(batch), outcome)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(
                        ProtocolError(ErrorCode.INFERENCE_FAILED, "the hub model failed")
                    )
            return
        for item, probabilities in zip(batch, outcome, strict=True):
            if not item.future.done():
                item.future.set_result(probabilities)

    def close(self) -> None:
        """Fail whatever is still queued (the service is stopping)."""
        self._cancel_scheduled()
        queued, self._queue = self._queue, []
        for item in queued:
            if not item.future.done():
                item.future.set_exception(
                    ProtocolError(ErrorCode.INFERENCE_FAILED, "the hub is shutting down")
                )
