"""The agent's bundle updater: the shell around `core` that owns the I/O.

Every `period_s` (and at once after a change) it sends the hub a signed version-2 device
report holding one `ModelStatus` (the bundle it runs, what became of its assignment); the
hub's signed ack names the bundle assigned now. A new assignment is fetched
(`BundleFetcher`), loaded and warmed up in a worker thread (`load_checked`), then swapped in
on the event loop between requests: `AgentState.runtime`, its micro-batcher and its domain are
replaced in one step, so a request sees either bundle whole. For its first `probation`
answers the new bundle runs behind a `ProbationModel`: one failed check rolls back to the
previous bundle, and that answer comes from the previous bundle, so no request fails.

Only the event loop's thread reads or writes the updater and the agent state; the worker
thread builds a new runtime that nothing else sees until it is handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from edge_agent.batcher import MicroBatcher
from edge_agent.bundle_update import core
from edge_agent.bundle_update.fetch import BundleFetcher, FetchInterrupted
from edge_agent.bundle_update.guard import ProbationModel
from edge_agent.bundle_update.health import load_checked
from edge_agent.domain import BundleDomain, load_domain
from edge_agent.errors import HubUnavailable
from edge_agent.runtime import EdgeRuntime, LocalModel
from escalade_protocol.artifacts import MANIFEST_NAME
from escalade_protocol.bundles import BundleRefused, bundle_digest
from escalade_protocol.device_reports import (
    ASSIGNMENT_VERSION,
    NO_DIGEST,
    NONCE_SIZE,
    REPORT_CONTENT_TYPE,
    BundleState,
    DeviceReport,
    ModelStatus,
    verify_ack,
)
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import Ed25519PublicKey
from escalade_protocol.messages import BundleHealth

if TYPE_CHECKING:
    from edge_agent.api import AgentState

log = logging.getLogger("edge_agent.bundle_update")


def installed_digest(models_dir: Path) -> str:
    return bundle_digest((models_dir / MANIFEST_NAME).read_bytes())


@dataclass(frozen=True, slots=True)
class UpdaterSettings:
    release_keys: tuple[Ed25519PublicKey, ...]
    period_s: float
    probation: int


class BundleUpdater:
    def __init__(self, agent: AgentState, settings: UpdaterSettings) -> None:
        self._agent = agent
        self._settings = settings
        self.state = core.initial(installed_digest(agent.config.models_dir))
        self._fetcher: BundleFetcher | None = None
        self._dirs: dict[str, Path] = {self.state.installed: agent.config.models_dir}
        # The runtime in use before the one on probation (what a rollback returns to).
        self._previous: tuple[EdgeRuntime, BundleDomain] | None = None
        self._wake = asyncio.Event()
        self._work: asyncio.Task[None] | None = None
        if not settings.release_keys:
            log.warning(
                "no release key pinned (release_keys): assigned bundles are checked against "
                "their digests only, unsigned ones accepted"
            )

    # -- what `edge-agent status` shows --------------------------------------------------

    def health(self) -> BundleHealth:
        s = self.state
        return BundleHealth(
            digest=s.running,
            installed_digest=s.installed,
            assigned_digest=s.assigned,
            state=s.status.name.lower(),
            phase=s.phase.value,
            failed=sorted(s.failed),
            code=s.code,
            detail=s.detail,
        )

    # -- the regular exchange with the hub -----------------------------------------------

    async def run_forever(self) -> None:
        async with aiohttp.ClientSession() as http:
            self._fetcher = BundleFetcher(
                http, self._agent.config.data_dir / "bundles", self._settings.release_keys
            )
            await self._exchange_forever()

    async def _exchange_forever(self) -> None:
        while True:
            try:
                await self.exchange()
            except HubUnavailable as exc:
                log.debug("bundle status not delivered: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.period_s):
                    await self._wake.wait()

    async def close(self) -> None:
        if self._work is not None:
            self._work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._work

    def _status(self) -> ModelStatus:
        s, manifest = self.state, self._agent.runtime.manifest
        target = s.wanted if s.wanted != s.running else None
        return ModelStatus(
            record_id=uuid.uuid4(),
            at_ms=time.time_ns() // 1_000_000,
            model_id=manifest.model_id,
            model_version=manifest.model_version,
            bundle_digest=bytes.fromhex(s.running),
            state=s.status,
            target_digest=bytes.fromhex(target) if target else NO_DIGEST,
            code=s.code,
            detail=s.detail,
        )

    async def exchange(self) -> None:
        """Report the model, learn the assignment, start applying it if it changed."""
        client = self._agent.client
        assert client is not None
        hub = client.attested or await client.ensure_attested()
        report = DeviceReport(
            device_id=self._agent.identity.device_id,
            sent_at_ms=time.time_ns() // 1_000_000,
            nonce=os.urandom(NONCE_SIZE),
            hub_key_id=hub.key_id,
            items=(self._status(),),
            version=ASSIGNMENT_VERSION,
        ).sign(self._agent.identity.key)
        try:
            raw = await client.post("/v1/device-reports", report, REPORT_CONTENT_TYPE)
        except HubUnavailable as exc:
            if exc.code is ErrorCode.UNKNOWN_HUB_KEY:
                await client.probe()  # the hub restarted with new keys: attest it again
            raise
        try:
            ack = verify_ack(raw, hub.keys.signing_key, report=report)
        except ProtocolError as exc:
            log.warning("hub ack of the model status rejected: %s", exc)
            return
        if ack.version < ASSIGNMENT_VERSION:
            return  # a hub without rollouts
        self.state = core.assigned(self.state, ack.assigned.hex() if ack.assigned else None)
        self._apply(core.plan(self.state), hub_url=self._agent.hub_url)

    # -- applying an assignment ------------------------------------------------------------

    def _apply(self, action: core.Action, *, hub_url: str) -> None:
        if isinstance(action, core.Keep):
            return
        digest = action.digest if isinstance(action, core.Fetch) else self.state.installed
        self.state = core.loading(self.state)
        self._work = asyncio.create_task(self._load(digest, hub_url))

    async def _load(self, digest: str, hub_url: str) -> None:
        agent = self._agent
        try:
            bundle_dir = self._dirs.get(digest)
            if bundle_dir is None:
                assert self._fetcher is not None
                fetched = await self._fetcher.fetch(hub_url, digest)
                bundle_dir = fetched.path
                log.info(
                    "bundle %s fetched (%d bytes, %d files resumed)",
                    digest[:16],
                    fetched.received,
                    fetched.resumed,
                )
            running = agent.runtime.manifest
            runtime = await asyncio.to_thread(
                load_checked,
                bundle_dir,
                agent.profile,
                data_dir=agent.config.data_dir,
                running=running,
            )
            domain = await asyncio.to_thread(load_domain, bundle_dir, runtime.manifest)
        except FetchInterrupted as exc:
            log.warning("bundle %s: download interrupted (%s); retrying later", digest[:16], exc)
            self.state = core.interrupted(self.state)
            return
        except BundleRefused as exc:
            outcome = (
                BundleState.ROLLED_BACK
                if exc.code is ErrorCode.BUNDLE_WARMUP_FAILED
                else BundleState.REFUSED
            )
            log.error("bundle %s %s: %s", digest[:16], outcome.name.lower(), exc.message)
            self.state = core.refused(
                self.state, digest, exc.code.value, exc.message, outcome=outcome
            )
            self._wake.set()
            return
        finally:
            self._work = None
        self._dirs[digest] = bundle_dir
        self._swap(digest, runtime, domain)
        self._wake.set()

    def _batcher(self, model: LocalModel) -> MicroBatcher:
        config = self._agent.config
        return MicroBatcher(
            model, max_batch=config.max_batch_size, max_wait_s=config.max_batch_wait_ms / 1000.0
        )

    def _swap(self, digest: str, runtime: EdgeRuntime, domain: BundleDomain) -> None:
        """On the loop, between requests: the new bundle serves from the next request on."""
        agent = self._agent
        previous = agent.runtime
        probation = self._settings.probation if digest != self.state.installed else 0
        self.state = core.swapped(self.state, digest, probation=probation)
        model: LocalModel = runtime
        if probation > 0:
            self._previous = (previous, agent.domain)
            model = ProbationModel(runtime, previous, self._checked)
        agent.runtime = runtime
        agent.domain = domain
        agent.batcher = self._batcher(model)
        log.info(
            "now serving bundle %s (%s v%d)%s",
            digest[:16],
            runtime.manifest.model_id,
            runtime.manifest.model_version,
            f", its first {probation} answers checked" if probation else "",
        )

    def _checked(self, good: int, problem: str | None) -> None:
        """Called by the ProbationModel (on the loop) for each batch it answered."""
        rollback = False
        for _ in range(good):
            self.state, rollback = core.answered(self.state, ok=True)
        if problem is not None:
            self.state, rollback = core.answered(self.state, ok=False)
        agent = self._agent
        if rollback and self._previous is not None:
            failed = self.state.running
            agent.runtime, agent.domain = self._previous
            agent.batcher = self._batcher(agent.runtime)
            self.state = core.rolled_back(
                self.state, ErrorCode.BUNDLE_WARMUP_FAILED.value, f"an answer failed: {problem}"
            )
            self._previous = None
            log.error("bundle %s rolled back: %s", failed[:16], problem)
            self._wake.set()
        elif self.state.phase is core.Phase.IDLE and self._previous is not None:
            # Probation passed: the previous bundle is released.
            self._previous = None
            agent.batcher = self._batcher(agent.runtime)
            self._wake.set()
