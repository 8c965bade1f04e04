"""The hub's aiohttp application: routes, typed state, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from attestation.binding import NONCE_SIZE
from attestation.pccs import PccsClient
from cloud_hub.attesters import Attester, CollateralRefresher, DcapAttester, make_attester
from cloud_hub.cohort_watch import CohortWatch
from cloud_hub.config import HubConfig
from cloud_hub.device_reports import register_device_reports
from cloud_hub.devices import DeviceCache
from cloud_hub.enrollment import enroll
from cloud_hub.escalation import EscalationPipeline, EscalationPolicy
from cloud_hub.identity import HubIdentity
from cloud_hub.poisoning import CheckResult
from cloud_hub.recorder import EscalationRecorder
from cloud_hub.reputation_book import Observation, ReputationBook
from cloud_hub.serving import HubModel
from cloud_hub.store import Device, Store
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import error_middleware, json_response, read_body, read_json
from escalade_protocol.messages import (
    AttestationRequest,
    EnrollRequest,
    EnrollResponse,
    HealthBody,
)

log = logging.getLogger("cloud_hub")

ENVELOPE_CONTENT_TYPE = "application/vnd.escalade.envelope"
ANSWER_CONTENT_TYPE = "application/vnd.escalade.answer"
# A hub model faster than this runs on the event loop: cheaper than handing it to a thread.
INLINE_MODEL_BUDGET_S = 200e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class HubState:
    config: HubConfig
    store: Store
    identity: HubIdentity
    attester: Attester
    model: HubModel
    pipeline: EscalationPipeline
    devices: DeviceCache
    reputations: ReputationBook
    cohorts: CohortWatch
    recorder: EscalationRecorder
    # Blocking work (database reads, enrollment, a slow hub model) runs here, off the loop.
    executor: ThreadPoolExecutor
    # Whether `accept` (verify, decrypt, infer, sign) runs on the loop: yes while the hub model
    # is fast enough that a thread hop would cost more than the work itself.
    accept_inline: bool


STATE = web.AppKey("state", HubState)


def build_state(config: HubConfig) -> HubState:
    attester = make_attester(config)
    model = HubModel(config.models_dir)
    store = Store.open(config.effective_database_url)
    identity = HubIdentity.generate()
    pipeline = EscalationPipeline(
        identity=identity,
        model=model,
        policy=EscalationPolicy(timestamp_window_ms=int(config.timestamp_window_s * 1000)),
    )
    model_latency_s = model.measure_latency()
    accept_inline = model_latency_s <= INLINE_MODEL_BUDGET_S
    log.info(
        "hub model takes %.0f us per request: escalations are answered %s",
        model_latency_s * 1e6,
        "on the event loop" if accept_inline else "in a worker thread",
    )
    return HubState(
        config=config,
        store=store,
        identity=identity,
        attester=attester,
        model=model,
        pipeline=pipeline,
        devices=DeviceCache(store),
        reputations=ReputationBook(),
        cohorts=CohortWatch(model.reference),
        recorder=EscalationRecorder(store),
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-worker"),
        accept_inline=accept_inline,
    )


async def handle_health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(HealthBody(status="ok", detail=f"model {state.model.info.model_id}"))


async def handle_attestation(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request, AttestationRequest)
    if len(body.nonce) != NONCE_SIZE:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "nonce must be 32 bytes")
    # Quote generation talks to the platform's quoting enclave: milliseconds, off the loop.
    bundle = await asyncio.get_running_loop().run_in_executor(
        state.executor, state.identity.attest, state.attester, body.nonce, state.model.info
    )
    return json_response(bundle)


async def handle_enroll(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request, EnrollRequest)
    device_id = await asyncio.get_running_loop().run_in_executor(
        state.executor, enroll, state.store, body
    )
    log.info("enrolled device %s (profile %s)", device_id, body.profile)
    return json_response(EnrollResponse(device_id=device_id), status=201)


async def handle_escalate(request: web.Request) -> web.Response:
    state = request.app[STATE]
    loop = asyncio.get_running_loop()
    body = await read_body(request)
    sealed = state.pipeline.inspect(body)
    device_id = sealed.header.device_id
    device = state.devices.cached(device_id)
    if device is None:
        device = await loop.run_in_executor(state.executor, state.devices.load, device_id)
    if state.accept_inline:
        accepted = state.pipeline.accept(sealed, device, body)
    else:
        accepted = await loop.run_in_executor(
            state.executor, state.pipeline.accept, sealed, device, body
        )
    # The answer leaves only once its record (and so its replay check) is committed.
    await state.recorder.record(accepted.record)
    assert device is not None  # accept() refuses unknown devices
    observation = state.reputations.observe(device, accepted.check)
    if observation.persist or observation.quarantine:
        await loop.run_in_executor(
            state.executor, _judge_device, state, device, accepted.check, observation
        )
    accepted.raise_if_rejected()
    if accepted.check.passed:
        state.cohorts.observe(device.device_id, device.profile, accepted.embedding)
    return web.Response(body=accepted.answer, content_type=ANSWER_CONTENT_TYPE)


def sweep_cohorts(state: HubState) -> int:
    """Compare devices with their peers; flags go to the audit log. Returns how many."""
    flags = state.cohorts.sweep()
    for item in flags:
        flag = item.flag
        state.store.add_audit_event(
            device_id=uuid.UUID(flag.device_id),
            action=f"cohort_{flag.reason}",
            actor="hub",
            reason=f"window mean {flag.distance:.1f} whitened units from "
            + ("the fleet" if flag.reason == "fleet_outlier" else "the reference, with peers"),
            evidence={
                "profile": item.profile,
                "distance": round(flag.distance, 3),
                "group": list(flag.group),
            },
        )
    if flags:
        log.warning("cohort sweep flagged %d device(s)", len(flags))
    return len(flags)


def _judge_device(
    state: HubState, device: Device, check: CheckResult, observation: Observation
) -> None:
    """Write a moving CUSUM back, and quarantine the device when it crossed the limit."""
    rep = observation.reputation
    if observation.quarantine:
        evidence: dict[str, object] = {
            "cusum": round(rep.cusum, 3),
            "messages_seen": rep.messages,
            "failed_checks": rep.failures,
            "last_score": round(check.score, 3) if math.isfinite(check.score) else None,
            "last_reason": check.reason,
            "decision_limit": state.reputations.params.decision_limit,
        }
        reason = (
            f"poisoning checks: CUSUM {rep.cusum:.1f} over {rep.messages} messages "
            f"({rep.failures} failed, last: {check.reason or 'passed'})"
        )
        if state.store.set_device_status(
            device.device_id,
            "quarantined",
            reason=reason,
            actor="hub",
            evidence=evidence,
            only_from="active",
            generation=device.generation,
        ):
            log.warning("quarantined device %s: %s", device.device_id, reason)
        state.devices.invalidate(device.device_id)
        state.reputations.forget(device.device_id)
    else:
        state.store.save_reputation(device.device_id, generation=device.generation, cusum=rep.cusum)


def make_app(state: HubState) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=state.config.max_body_bytes
    )
    app[STATE] = state

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        yield
        state.recorder.close()
        state.executor.shutdown(wait=True)
        state.store.close()

    async def collateral(_app: web.Application) -> AsyncIterator[None]:
        attester, url = state.attester, state.config.pccs_url
        if url is None or not isinstance(attester, DcapAttester):
            yield
            return
        async with aiohttp.ClientSession() as http:
            refresher = CollateralRefresher(attester, PccsClient(http, url))
            await refresher.refresh()
            task = asyncio.create_task(refresher.run(state.config.collateral_refresh_s))
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def cohort_sweeps(_app: web.Application) -> AsyncIterator[None]:
        async def run() -> None:
            loop = asyncio.get_running_loop()
            while True:
                await asyncio.sleep(state.config.cohort_interval_s)
                await loop.run_in_executor(state.executor, sweep_cohorts, state)

        task = asyncio.create_task(run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(collateral)
    app.cleanup_ctx.append(cohort_sweeps)
    app.router.add_get("/v1/health", handle_health)
    app.router.add_post("/v1/attestation", handle_attestation)
    app.router.add_post("/v1/enroll", handle_enroll)
    app.router.add_post("/v1/escalate", handle_escalate)
    register_device_reports(app, state.store, state.identity)
    return app
