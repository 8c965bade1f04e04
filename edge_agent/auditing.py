"""Answering the hub's audits: keep what each escalation committed to, reveal it when asked.

Every escalation sent with its input leaves that input and salt in the `AuditStore` for the
audit window. When a signed answer says the hub audits that escalation, the agent reveals the
input to that hub (sealed to its attested key) in the background, retrying while the hub is
unreachable, for up to `give_up_s` (the hub's deadline is longer). The answer itself is
returned to the application at once: an audit never delays an inference.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edge_agent.audit_store import AuditStore
from edge_agent.errors import HubUnavailable
from edge_agent.hub_client import AttestedHub, EscalationResult, HubClient

log = logging.getLogger("edge_agent.audits")

# The client that can reach the hub with this attested identity (the agent may know several).
ClientFor = Callable[[AttestedHub], HubClient | None]


class AuditResponder:
    def __init__(
        self,
        store: AuditStore,
        client_for: ClientFor,
        *,
        retry_s: float = 2.0,
        give_up_s: float = 90.0,
        purge_s: float = 30.0,
    ) -> None:
        self.store = store
        self._client_for = client_for
        self._retry_s = retry_s
        self._give_up_s = give_up_s
        self._purge_s = purge_s
        self._tasks: set[asyncio.Task[None]] = set()
        self.audited = 0
        self.revealed = 0
        self.failed = 0

    def escalated(self, result: EscalationResult) -> None:
        """After an answer: keep its input for the window; reveal it now if audited."""
        revealed = result.revealed
        if revealed is None:
            return
        self.store.put(result.request_digest, revealed)
        if not result.answer.audit or result.hub is None:
            return
        self.audited += 1
        task = asyncio.create_task(self._reveal(result.hub, result.request_digest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reveal(self, hub: AttestedHub, request_digest: bytes) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._give_up_s
        while True:
            revealed = self.store.get(request_digest)
            client = self._client_for(hub)
            if revealed is None or client is None:
                self.failed += 1
                log.warning("cannot answer an audit: the input or the hub is gone")
                return
            try:
                await client.reveal(hub, request_digest, revealed)
            except HubUnavailable as exc:
                if loop.time() + self._retry_s > deadline:
                    self.failed += 1
                    log.warning("gave up revealing an audited input: %s", exc)
                    return
                await asyncio.sleep(self._retry_s)
                continue
            except Exception:
                self.failed += 1
                log.exception("revealing an audited input failed")
                return
            self.revealed += 1
            return

    async def purge_forever(self) -> None:
        while True:
            self.store.purge()
            await asyncio.sleep(self._purge_s)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store.close()
