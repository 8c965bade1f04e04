"""Periodic background jobs that cannot silently die.

Each job runs every `interval_s` on the event loop (it hands blocking work to an executor
itself). A job that raises is logged with its traceback, counted, and run again at its next
interval: a failure never ends the job, and nothing ends it but `stop`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("cloud_hub")

# A job may return a value (what it did, for callers that run it directly); it is ignored.
Job = Callable[[], Awaitable[object]]


class Supervisor:
    def __init__(self, *, on_failure: Callable[[str], None] | None = None) -> None:
        self._on_failure = on_failure or (lambda _name: None)
        self._tasks: list[asyncio.Task[None]] = []

    def every(self, name: str, interval_s: float, job: Job) -> None:
        """Run `job` every `interval_s` seconds, from now until `stop`."""
        self._tasks.append(asyncio.create_task(self._repeat(name, interval_s, job), name=name))

    async def _repeat(self, name: str, interval_s: float, job: Job) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except Exception:
                log.exception("background job %s failed; it runs again in %g s", name, interval_s)
                self._on_failure(name)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
