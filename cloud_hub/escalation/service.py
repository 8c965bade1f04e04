"""`EscalationService`: the one owner of the hub's escalation path and of all its state.

It holds the device cache, the group-commit recorder, the reputation book, the cohort watch,
the hub model's batcher, the executors and the background jobs. Every piece of state is
mutated on the event loop only: worker threads get values and return values (a database read,
a model batch, a cohort comparison over a snapshot), never a shared dict.

One escalation, in order (each step may refuse with a stable code):

    inspect       pipeline: structure, header ranges, hub key, model, freshness
    device        the cache, else a read on the database thread
    open          pipeline: status, signature, HPKE, tensor checks
    infer         the dynamic batcher (one session.run for many requests); with a model
                  network, the meta-router's plan, one batcher per model, then fusion
    conclude      pipeline: poisoning checks, the record
    record        group commit: replay check + device still active, durably
    judge         consequences: reply, reputation, quarantine (pure)
    carry out     quarantine awaited; a moved CUSUM written behind; cohort window fed
    answer        signed, only now that the record is committed
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import ParamSpec, TypeVar

from cloud_hub.audit import AuditEvidence, CohortEvidence, KnnEvidence
from cloud_hub.audits import AuditOutcome, AuditPolicy
from cloud_hub.audits.auditor import Auditor
from cloud_hub.escalation.batcher import BatchingConfig, DynamicBatcher
from cloud_hub.escalation.cohort_watch import CohortWatch, ProfileFlag
from cloud_hub.escalation.consequences import Answered, Outcome, Quarantine, judge
from cloud_hub.escalation.devices import DeviceCache
from cloud_hub.escalation.knn_watch import KnnFlag, KnnWatch, bundle_knn_auditor
from cloud_hub.escalation.pipeline import (
    F32,
    EscalationPipeline,
    EscalationPolicy,
    device_refusal,
)
from cloud_hub.escalation.recorder import DeviceInactive, EscalationRecorder
from cloud_hub.escalation.reputation_book import ReputationBook
from cloud_hub.escalation.supervisor import Supervisor
from cloud_hub.identity import HubIdentity
from cloud_hub.metrics import HubMetrics
from cloud_hub.models import ModelNetwork, NetworkAnswer, RegisteredModel, Routed
from cloud_hub.models.network import GENERALIST
from cloud_hub.poisoning import ReputationParams
from cloud_hub.serving import HubModel
from cloud_hub.store import Device, Store
from cloud_hub.store.costs import CostTotals, add_device_costs
from cloud_hub.store.policies import HubPolicy, load_stored_policy
from escalade_protocol.answer import Answer, RouteReason
from escalade_protocol.device_reports import AuditReveal
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.messages import HubModelInfo

log = logging.getLogger("cloud_hub")

P = ParamSpec("P")
T = TypeVar("T")

# A hub model faster than this per batch runs on the event loop: cheaper than a thread hop.
INLINE_MODEL_BUDGET_S = 200e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    policy: EscalationPolicy = field(default_factory=EscalationPolicy)
    reputation: ReputationParams = field(default_factory=ReputationParams)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    # How often devices' mean embeddings are compared with their peers'.
    cohort_interval_s: float = 300.0
    # How often moved CUSUMs are written back (what a crash may lose of them).
    reputation_flush_s: float = 1.0
    # How often devices' last sightings are written (`devices.last_seen_at`, for operators).
    last_seen_flush_s: float = 5.0
    # How often replay records older than the timestamp window are deleted.
    prune_interval_s: float = 60.0
    # SQLite only: how often the write-ahead log is folded back into the database.
    checkpoint_interval_s: float = 5.0
    # The k-NN audit of live traffic: the share of accepted messages sampled (0: off), and
    # how often the sample is checked (off the request path).
    knn_sample_rate: float = 0.02
    knn_interval_s: float = 10.0
    # How often the stored fleet policy (admin API) is read back: replicas follow an
    # administrator's change within this.
    policy_reload_s: float = 5.0
    # Audits by re-encoding (off unless the rate is above 0).
    audit: AuditPolicy = field(default_factory=AuditPolicy)
    # Force the model onto the loop (True) or a thread (False); None: decide by its latency.
    model_inline: bool | None = None


class EscalationService:
    def __init__(
        self,
        *,
        store: Store,
        identity: HubIdentity,
        model: HubModel,
        metrics: HubMetrics,
        config: ServiceConfig | None = None,
        network: ModelNetwork | None = None,
        price_per_1k: float = 1.0,
    ) -> None:
        """`network`: several hub models behind a meta-router (None: `model` alone, whose
        declared price per 1000 answers is `price_per_1k`)."""
        self.config = config or ServiceConfig()
        self.store = store
        self.model = model
        self.metrics = metrics
        self.pipeline = EscalationPipeline(
            identity=identity, model=model, policy=self.config.policy
        )
        self.devices = DeviceCache()
        self.reputations = ReputationBook(self.config.reputation)
        self.cohorts = CohortWatch(model.reference)
        knn = bundle_knn_auditor(model.bundle_dir, model.reference)
        rate = self.config.knn_sample_rate
        self.knn = KnnWatch(knn, rate=rate) if knn is not None and rate > 0 else None
        self.recorder = EscalationRecorder(store, on_commit=metrics.commit_size.observe)
        # Blocking database work (device reads, enrollment, status changes, background jobs).
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-db")
        inline = self.config.model_inline
        latency = model.measure_latency()
        self.pipeline.single_model = replace(
            self.pipeline.single_model,
            model_us=round(latency * 1e6),
            price=price_per_1k / 1000.0,
        )
        if inline is None:
            inline = latency <= INLINE_MODEL_BUDGET_S
            log.info(
                "hub model takes %.0f us per request: it runs %s, batches of up to %d",
                latency * 1e6,
                "on the event loop" if inline else "on its own thread",
                self.config.batching.max_batch_size,
            )
        self._model_thread = (
            None if inline else ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-model")
        )
        self.batcher = DynamicBatcher(
            model.predict_batch,
            self.config.batching,
            executor=self._model_thread,
            on_batch=metrics.batch_size.observe,
        )
        self.network = network
        # One batcher per network model (the generalist shares the one above).
        self.batchers: dict[str, DynamicBatcher] = {}
        self._network_threads: list[ThreadPoolExecutor] = []
        if network is not None:
            for name, registered in network.models.models.items():
                self.batchers[name] = (
                    self.batcher if name == GENERALIST else self._model_batcher(registered)
                )
        self.auditor = Auditor(
            self.config.audit,
            bundle_dir=model.bundle_dir,
            wire_dtype=model.manifest.wire_dtype,
            hub_keys=identity.private_for,
            quarantine=self._quarantine,
            counted=lambda outcome: metrics.audits.labels(outcome.value).inc(),
        )
        self._supervisor = Supervisor(on_failure=self._job_failed)
        # Metric children resolved once: a label lookup per request is measurable here.
        self._answered = metrics.escalations.labels("answered")
        self._latency = metrics.escalation_seconds
        # Escalations between body read and reply (on the loop).
        self._in_flight = 0
        # When each device's latest escalation was recorded (epoch s), until the next flush.
        self._last_seen: dict[uuid.UUID, float] = {}
        # What each device's answers cost since the last flush (`device_costs`).
        self._costs: dict[uuid.UUID, CostTotals] = {}
        # The stored policy's revision in force (0: none stored yet, the configured defaults).
        self._policy_revision = 0

    def _model_batcher(self, registered: RegisteredModel) -> DynamicBatcher:
        inline = self.config.model_inline
        if inline is None:
            inline = registered.latency_s <= INLINE_MODEL_BUDGET_S
        thread = None
        if not inline:
            thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hub-{registered.name}")
            self._network_threads.append(thread)
        return DynamicBatcher(
            registered.predict_batch,
            self.config.batching,
            executor=thread,
            on_batch=self.metrics.batch_size.observe,
        )

    @property
    def model_info(self) -> HubModelInfo:
        """What the attestation bundle says of the model served, audit policy included."""
        adapted = self.pipeline.routes.adapted()
        return self.model.info.model_copy(
            update={"audit_rate": self.auditor.policy.rate, "adapted": adapted}
        )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background jobs (call on the running loop)."""
        c = self.config
        self._supervisor.every("cohort-sweep", c.cohort_interval_s, self.sweep_cohorts)
        self._supervisor.every("reputation-flush", c.reputation_flush_s, self.flush_reputations)
        self._supervisor.every("replay-prune", c.prune_interval_s, self.prune_replays)
        self._supervisor.every("last-seen-flush", c.last_seen_flush_s, self.flush_last_seen)
        self._supervisor.every("cost-flush", c.last_seen_flush_s, self.flush_costs)
        self._supervisor.every("policy-reload", c.policy_reload_s, self.reload_policy)
        if self.knn is not None:
            self._supervisor.every("knn-audit", c.knn_interval_s, self.audit_knn)
        self._supervisor.every("audit-deadlines", 1.0, self.auditor.expire)
        if self.store.is_local:
            self._supervisor.every("wal-checkpoint", c.checkpoint_interval_s, self._checkpoint)

    async def close(self) -> None:
        await self._supervisor.stop()
        self.batcher.close()
        for batcher in self.batchers.values():
            batcher.close()
        await self.flush_reputations()
        await self.flush_last_seen()
        await self.flush_costs()
        self.recorder.close()
        self.auditor.close()
        for thread in [self._model_thread, *self._network_threads]:
            if thread is not None:
                thread.shutdown(wait=True)
        self._db.shutdown(wait=True)

    async def blocking(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking (database) work on the service's database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, lambda: fn(*args, **kwargs))

    # -- the hot path -----------------------------------------------------------------------

    async def escalate(self, body: bytes) -> bytes:
        """Answer one sealed envelope, signed; raise `ProtocolError` to refuse it."""
        started = time.perf_counter()
        self._in_flight += 1
        try:
            answer = await self._escalate(body)
        except ProtocolError as exc:
            self.metrics.escalations.labels(exc.code.value).inc()
            self._latency.observe(time.perf_counter() - started)
            raise
        finally:
            self._in_flight -= 1
        self._answered.inc()
        self._latency.observe(time.perf_counter() - started)
        return answer

    async def _escalate(self, body: bytes) -> bytes:
        pipeline = self.pipeline
        inspected = pipeline.inspect(body)
        device_id = inspected.header.device_id
        cached = self.devices.cached(device_id)
        if cached is None:
            cached = self.devices.put(await self.blocking(self.store.get_device, device_id))
        device, verify_key = (cached.device, cached.verify_key) if cached else (None, None)
        # Refuses unknown and inactive devices (with their code) before any cryptography.
        opened = pipeline.open_request(inspected, device, verify_key)
        embedding = opened.embedding
        assert device is not None
        routed: Routed | None = None
        if self.network is not None and opened.local_probs is not None:
            fused = await self._network_answer(self.network, embedding, opened.local_probs)
            probabilities, routed = fused.probabilities, fused.routed
        else:
            # With one escalation in flight nothing can join a batch: a model on the loop then
            # runs at once instead of a loop iteration later (p50 at one in flight).
            probabilities = await self.batcher.infer(embedding, alone=self._in_flight == 1)
            if self.network is not None:
                routed = replace(pipeline.single_model, reason=RouteReason.NO_LOCAL_PROBS)
        concluded = pipeline.conclude(inspected, embedding, probabilities)
        try:
            await self.recorder.record(concluded.record)
        except DeviceInactive:
            raise await self._inactive(device_id) from None
        self._last_seen[device_id] = time.time()
        outcome = judge(
            device,
            concluded.check,
            self.reputations.current(device),
            self.reputations.params,
            answer=pipeline.unsigned_answer(concluded, routed=routed, request_bytes=len(body)),
            reject_score=pipeline.policy.reject_score,
        )
        await self._carry_out(device, outcome, embedding)
        if not isinstance(outcome.reply, Answered):
            raise outcome.reply.error()
        answer = outcome.reply.answer
        if self.auditor.desk.consider(
            device_id=device_id,
            generation=device.generation,
            request_digest=inspected.digest,
            commitment=inspected.header.commitment,
            embedding=embedding,
            envelope=body,
            model_version=inspected.header.model_version,
        ):
            answer = replace(answer, audit=True)
        self._count_cost(device_id, answer)
        return pipeline.sign(answer)

    def _count_cost(self, device_id: uuid.UUID, answer: Answer) -> None:
        c = answer.cost
        spent = CostTotals(1, c.model_us, c.request_bytes, c.price_micros)
        before = self._costs.get(device_id)
        self._costs[device_id] = spent if before is None else before.plus(spent)

    async def _network_answer(
        self, network: ModelNetwork, embedding: F32, local: F32
    ) -> NetworkAnswer:
        """The meta-router's plan, its models run (each in its own batcher, concurrently),
        their outputs fused with the device's probabilities."""
        plan = network.plan(embedding, local)
        alone = self._in_flight == 1
        outputs = await asyncio.gather(
            *(self.batchers[name].infer(embedding, alone=alone) for name in plan.run)
        )
        answer = network.answer(plan, local, dict(zip(plan.run, outputs, strict=True)))
        self.metrics.routes.labels(answer.routed.reason.name.lower()).inc()
        return answer

    async def _carry_out(self, device: Device, outcome: Outcome, embedding: F32) -> None:
        effect = outcome.effect
        self.reputations.remember(device, outcome.reputation, persist=effect is not None)
        if outcome.observe_cohort:
            self.cohorts.observe(device.device_id, device.profile, embedding)
            if self.knn is not None:
                self.knn.observe(device.device_id, embedding)
        # A quarantine is durable before this message's reply leaves; rare, so awaited.
        if isinstance(effect, Quarantine) and await self._quarantine(
            device.device_id, device.generation, effect.reason, effect.evidence
        ):
            log.warning("quarantined device %s: %s", device.device_id, effect.reason)

    async def _quarantine(
        self, device_id: uuid.UUID, generation: int, reason: str, evidence: AuditEvidence
    ) -> bool:
        """Quarantine the device if it is still active at that generation; True if now done."""
        self.device_changed(device_id)
        changed: bool = await self.blocking(
            self.store.set_device_status,
            device_id,
            "quarantined",
            reason=reason,
            actor="hub",
            evidence=evidence,
            only_from="active",
            generation=generation,
        )
        return changed

    async def reveal(self, device: Device, item: AuditReveal) -> AuditOutcome | None:
        """A device's reveal for an audited escalation (from its device report)."""
        return await self.auditor.reveal(device, item)

    async def _inactive(self, device_id: uuid.UUID) -> ProtocolError:
        """The commit found the device inactive: drop what we hold and say why."""
        self.device_changed(device_id)
        device = await self.blocking(self.store.get_device, device_id)
        if device is None:
            return ProtocolError(ErrorCode.UNKNOWN_DEVICE, "device is not enrolled")
        return device_refusal(device) or ProtocolError(
            ErrorCode.DEVICE_REVOKED, "device changed status during the request; retry"
        )

    def device_changed(self, device_id: uuid.UUID) -> None:
        """A status change made through this hub: forget what is cached for the device."""
        self.devices.invalidate(device_id)
        self.reputations.forget(device_id)

    # -- background jobs --------------------------------------------------------------------

    async def sweep_cohorts(self) -> int:
        """Compare devices with their peers; flags go to the audit log. Returns how many."""
        due = self.cohorts.take_due()  # on the loop: the windows are ours alone from here
        if not due:
            return 0
        loop = asyncio.get_running_loop()
        flags = await loop.run_in_executor(self._db, self.cohorts.sweep_due, due)
        await self.blocking(_write_cohort_flags, self.store, flags)
        if flags:
            log.warning("cohort sweep flagged %d device(s)", len(flags))
        return len(flags)

    async def audit_knn(self) -> int:
        """Check the sampled live embeddings against the clean bank; flags go to the audit
        log. Returns how many were flagged."""
        knn = self.knn
        if knn is None:
            return 0
        taken = knn.take()  # on the loop: the sample is ours alone from here
        if not taken:
            return 0
        loop = asyncio.get_running_loop()
        flags = await loop.run_in_executor(self._db, knn.check, taken)
        if flags:
            await self.blocking(_write_knn_flags, self.store, flags, knn)
            log.warning("k-NN audit flagged %d of %d sampled embeddings", len(flags), len(taken))
        return len(flags)

    async def flush_reputations(self) -> None:
        pending = self.reputations.drain()
        if not pending:
            return
        try:
            merged = await self.blocking(
                self.store.save_reputations, pending, ceiling=self.reputations.params.ceiling
            )
        except Exception:
            self.reputations.restore(pending)  # written at the next flush instead
            raise
        self.reputations.merged(pending, merged)

    async def reload_policy(self) -> bool:
        """Apply the stored fleet policy if it changed since the last look; True if it did."""
        stored = await self.blocking(load_stored_policy, self.store.engine)
        if stored.revision == self._policy_revision:
            return False
        self.apply_policy(stored.policy)
        self._policy_revision = stored.revision
        log.info("fleet policy revision %d applied: %s", stored.revision, stored.policy.summary())
        return True

    def apply_policy(self, policy: HubPolicy) -> None:
        """Take the administrator's policy: replay window, refusal and reputation bands, audits
        (the fleet rate, or this replica's own when the policy names none)."""
        self.pipeline.policy = EscalationPolicy(
            timestamp_window_ms=policy.timestamp_window_ms, reject_score=policy.reject_score
        )
        r = policy.reputation
        self.reputations.params = ReputationParams(
            drift_allowance=r.drift_allowance,
            decision_limit=r.decision_limit,
            failure_score=r.failure_score,
            hold=r.hold,
            ceiling=r.ceiling,
        )
        rate = self.config.audit.rate if policy.audit_rate is None else policy.audit_rate
        self.auditor.set_rate(rate)

    async def flush_last_seen(self) -> None:
        seen, self._last_seen = self._last_seen, {}
        if not seen:
            return
        try:
            await self.blocking(self.store.touch_devices, seen)
        except Exception:
            for device_id, at in seen.items():  # written at the next flush instead
                self._last_seen[device_id] = max(at, self._last_seen.get(device_id, at))
            raise

    async def flush_costs(self) -> None:
        pending, self._costs = self._costs, {}
        if not pending:
            return
        try:
            await self.blocking(add_device_costs, self.store.engine, pending)
        except Exception:
            for device_id, spent in pending.items():  # added at the next flush instead
                before = self._costs.get(device_id)
                self._costs[device_id] = spent if before is None else before.plus(spent)
            raise

    async def prune_replays(self) -> None:
        window_ms = self.pipeline.policy.timestamp_window_ms
        # A record sent before now - window can never match an acceptable envelope again; one
        # more window of margin covers clock steps between replicas.
        before = time.time_ns() // 1_000_000 - 2 * window_ms
        deleted = await self.blocking(self.store.prune_escalations, sent_before_ms=before)
        if deleted:
            log.info("pruned %d replay record(s) older than the timestamp window", deleted)

    async def _checkpoint(self) -> None:
        await self.blocking(self.store.checkpoint)

    def _job_failed(self, name: str) -> None:
        self.metrics.background_failures.labels(name).inc()


def _write_knn_flags(store: Store, flags: list[KnnFlag], knn: KnnWatch) -> None:
    for flag in flags:
        store.add_audit_event(
            device_id=flag.device_id,
            action="knn_outlier",
            actor="hub",
            reason=f"sampled embedding {flag.distance:.1f} whitened units from the clean bank",
            evidence=KnnEvidence(
                distance=round(flag.distance, 3),
                threshold=round(knn.auditor.threshold, 3),
                k=knn.auditor.k,
            ),
        )


def _write_cohort_flags(store: Store, flags: list[ProfileFlag]) -> None:
    for item in flags:
        flag = item.flag
        where = "the fleet" if flag.reason == "fleet_outlier" else "the reference, with peers"
        store.add_audit_event(
            device_id=uuid.UUID(flag.device_id),
            action=f"cohort_{flag.reason}",
            actor="hub",
            reason=f"window mean {flag.distance:.1f} whitened units from {where}",
            evidence=CohortEvidence(
                profile=item.profile, distance=round(flag.distance, 3), group=tuple(flag.group)
            ),
        )
