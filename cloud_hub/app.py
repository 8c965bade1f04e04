"""The hub's aiohttp application: routes, typed state, lifecycle.

The escalation path and all its state live in `EscalationService` (cloud_hub/escalation/);
the handlers here only move bytes in and out of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from attestation import AttestationBundle
from attestation.binding import NONCE_SIZE
from attestation.pccs import PccsClient
from attestation.snp.kds import KdsClient
from cloud_hub.admin.routes import PREFIX as ADMIN_PREFIX
from cloud_hub.admin.routes import admin_app
from cloud_hub.advertise import AdvertiseSettings, HubAdvertiser
from cloud_hub.attestation_desk import AttestationDesk, AttestationLimits
from cloud_hub.attesters import (
    Attester,
    CollateralRefresher,
    DcapAttester,
    KdsRefresher,
    SnpAttester,
    evidence_kind,
    make_attester,
)
from cloud_hub.audits import AuditPolicy
from cloud_hub.config import HubConfig
from cloud_hub.device_reports import register_device_reports
from cloud_hub.enrollment import enroll
from cloud_hub.errors import HubError
from cloud_hub.escalation import BatchingConfig, EscalationService, ServiceConfig
from cloud_hub.escalation.pipeline import EscalationPolicy
from cloud_hub.escalation.supervisor import Supervisor
from cloud_hub.identity import HubIdentity
from cloud_hub.metrics import CONTENT_TYPE_LATEST, HubMetrics
from cloud_hub.models import HubModels, ModelNetwork, RouterPrior, RouterSettings, select_models
from cloud_hub.replicas import ReplicaRegistry, ReplicaSettings
from cloud_hub.rollouts.autopilot import autopilot_pass
from cloud_hub.rollouts.desk import RolloutDesk
from cloud_hub.rollouts.routes import add_bundle_routes
from cloud_hub.rollouts.shelf import BundleShelf
from cloud_hub.sealing import hub_identity
from cloud_hub.serving import HubModel
from cloud_hub.store import Store
from cloud_hub.store.replicas import ReplicaTable
from escalade_protocol.artifacts import verified_path
from escalade_protocol.bundles import parse_release_keys
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import (
    error_middleware,
    error_response,
    json_response,
    read_body,
    read_json,
)
from escalade_protocol.messages import (
    AttestationRequest,
    EnrollRequest,
    EnrollResponse,
    HealthBody,
    ReplicaListRequest,
)
from escalade_protocol.replica_list import CONTENT_TYPE as REPLICA_LIST_CONTENT_TYPE
from escalade_protocol.replica_list import NONCE_SIZE as REPLICA_NONCE_SIZE

log = logging.getLogger("cloud_hub")

ENVELOPE_CONTENT_TYPE = "application/vnd.escalade.envelope"
ANSWER_CONTENT_TYPE = "application/vnd.escalade.answer"

QuoteFuture = asyncio.Future[AttestationBundle]


@dataclass(frozen=True, slots=True, kw_only=True)
class HubState:
    config: HubConfig
    identity: HubIdentity
    attester: Attester
    service: EscalationService
    # Admission and the per-nonce cache for /v1/attestation (quotes are a scarce resource).
    attestations: AttestationDesk[QuoteFuture]
    # Quote generation talks to the platform's quoting enclave: one at a time, off the loop.
    quoting: ThreadPoolExecutor
    # This replica's row in the shared replica table, and the live list agents fetch.
    replicas: ReplicaRegistry


STATE = web.AppKey("state", HubState)
# Present when the hub announces itself on the LAN (`cloud-hub serve`, unless --no-advertise).
ADVERTISER = web.AppKey("advertiser", HubAdvertiser)


def model_network(config: HubConfig, model: HubModel) -> ModelNetwork:
    """The bundle's hub models `config.hub_models` names, behind the meta-router."""
    manifest = model.manifest
    try:
        entries = select_models(manifest, config.hub_models)
    except ValueError as exc:
        raise HubError(f"--hub-models: {exc}") from None
    assert manifest.network is not None
    spec = manifest.network
    prior = RouterPrior.from_bytes(verified_path(model.bundle_dir, spec.router).read_bytes())
    inf = float("inf")
    settings = RouterSettings(
        exploration_rate=(
            spec.exploration_rate if config.route_exploration is None else config.route_exploration
        ),
        max_price=inf
        if config.route_max_price_per_1k is None
        else config.route_max_price_per_1k / 1000,
        max_model_ms=inf if config.route_max_model_ms is None else config.route_max_model_ms,
    )
    models = HubModels(model.bundle_dir, manifest, entries)
    return ModelNetwork(models, prior, settings, prior_arms=[a.name for a in spec.arms])


def build_state(config: HubConfig, *, service_config: ServiceConfig | None = None) -> HubState:
    attester = make_attester(config)
    model = HubModel(config.models_dir)
    store = Store.open(config.effective_database_url)
    identity = hub_identity(config, attester)
    service_config = service_config or ServiceConfig(
        policy=EscalationPolicy(timestamp_window_ms=int(config.timestamp_window_s * 1000)),
        batching=BatchingConfig(
            max_batch_size=config.max_batch_size,
            max_queue_delay_s=config.max_queue_delay_ms / 1000,
        ),
        cohort_interval_s=config.cohort_interval_s,
        audit=AuditPolicy(rate=config.audit_rate, deadline_s=config.audit_deadline_s),
    )
    service = EscalationService(
        store=store,
        identity=identity,
        model=model,
        metrics=HubMetrics(),
        config=service_config,
        network=model_network(config, model) if config.hub_models else None,
        price_per_1k=config.hub_price_per_1k,
    )
    replicas = ReplicaRegistry(
        ReplicaTable(store.engine),
        identity,
        tee=evidence_kind(attester),
        settings=ReplicaSettings(
            advertise_url=config.advertise_url,
            heartbeat_s=config.replica_heartbeat_s,
            liveness_s=config.replica_liveness_s,
        ),
        blocking=service.blocking,
    )
    return HubState(
        replicas=replicas,
        config=config,
        identity=identity,
        attester=attester,
        service=service,
        attestations=AttestationDesk(
            AttestationLimits(
                client_rate_per_s=config.attestation_rate_per_s,
                client_burst=config.attestation_burst,
            )
        ),
        quoting=ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-quote"),
    )


async def handle_health(request: web.Request) -> web.Response:
    # Touches no database and waits for nothing: a health check must answer at once.
    state = request.app[STATE]
    return json_response(
        HealthBody(status="ok", detail=f"model {state.service.model.info.model_id}")
    )


async def handle_metrics(request: web.Request) -> web.Response:
    metrics = request.app[STATE].service.metrics
    response = web.Response(body=metrics.exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def handle_attestation(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request, AttestationRequest)
    if len(body.nonce) != NONCE_SIZE:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "nonce must be 32 bytes")
    desk, counter = state.attestations, state.service.metrics.attestations
    pending = desk.cache.get(body.nonce)
    if pending is not None:
        counter.labels("cached").inc()
        return json_response(await asyncio.shield(pending))
    wait = desk.admit(request.remote or "unknown")
    if wait > 0:
        counter.labels("rate_limited").inc()
        response = error_response(
            ProtocolError(
                ErrorCode.RATE_LIMITED, f"too many attestation requests; retry in {wait:.1f} s"
            )
        )
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    counter.labels("quoted").inc()
    loop = asyncio.get_running_loop()
    quote = loop.run_in_executor(
        state.quoting, state.identity.attest, state.attester, body.nonce, state.service.model_info
    )
    desk.cache.put(body.nonce, quote)
    try:
        bundle = await asyncio.shield(quote)
    except Exception:
        desk.cache.drop(body.nonce)
        raise
    return json_response(bundle)


async def handle_enroll(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request, EnrollRequest)
    device_id = await state.service.blocking(enroll, state.service.store, body)
    log.info("enrolled device %s (profile %r)", device_id, body.profile)
    return json_response(EnrollResponse(device_id=device_id), status=201)


async def handle_escalate(request: web.Request) -> web.Response:
    service = request.app[STATE].service
    answer = await service.escalate(await read_body(request))
    return web.Response(body=answer, content_type=ANSWER_CONTENT_TYPE)


async def handle_replicas(request: web.Request) -> web.Response:
    # Served from the snapshot the heartbeat refreshes: no database on this path.
    state = request.app[STATE]
    body = await read_json(request, ReplicaListRequest)
    if len(body.nonce) != REPLICA_NONCE_SIZE:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"nonce must be {REPLICA_NONCE_SIZE} bytes")
    signed = state.replicas.signed_list(body.nonce)
    return web.Response(body=signed, content_type=REPLICA_LIST_CONTENT_TYPE)


# -- what runs beside the handlers (aiohttp cleanup contexts: started in order, stopped reversed)


async def _service(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.service.reload_policy()  # the fleet policy before the first request
    state.service.start()
    yield
    await state.service.close()
    state.quoting.shutdown(wait=True)
    state.service.store.close()


def _jobs(state: HubState) -> Supervisor:
    failures = state.service.metrics.background_failures
    return Supervisor(on_failure=lambda name: failures.labels(name).inc())


async def _refreshing(
    state: HubState, name: str, refresh: Callable[[], Awaitable[bool]]
) -> AsyncIterator[None]:
    """Run `refresh` once now, then periodically under the supervisor, until the app stops."""
    await refresh()
    jobs = _jobs(state)
    jobs.every(name, state.config.collateral_refresh_s, refresh)
    try:
        yield
    finally:
        await jobs.stop()


async def _collateral(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    attester, url = state.attester, state.config.pccs_url
    if url is None or not isinstance(attester, DcapAttester):
        yield
        return
    async with aiohttp.ClientSession() as http:
        refresher = CollateralRefresher(attester, PccsClient(http, url))
        async for _ in _refreshing(state, "collateral-refresh", refresher.refresh):
            yield


KDS_CACHE_DIR = "kds-cache"


async def _kds(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    attester, url = state.attester, state.config.kds_url
    if url is None or not isinstance(attester, SnpAttester):
        yield
        return
    cache = state.config.data_dir / KDS_CACHE_DIR
    async with aiohttp.ClientSession() as http:
        base_url = None if url == "offline" else url
        refresher = KdsRefresher(attester, KdsClient(http, base_url=base_url, cache_dir=cache))
        async for _ in _refreshing(state, "kds-refresh", refresher.refresh):
            yield


async def _replica_heartbeat(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    jobs = _jobs(state)
    jobs.every("replica-heartbeat", state.replicas.settings.heartbeat_s, state.replicas.heartbeat)
    try:
        yield
    finally:
        await jobs.stop()
        await state.replicas.sign_off()


async def _rollout_autopilot(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    service, period = state.service, state.config.rollout_auto_s
    jobs = _jobs(state)
    if period > 0:

        async def judge() -> None:
            await service.blocking(autopilot_pass, service.store.engine)

        jobs.every("rollout-autopilot", period, judge)
    try:
        yield
    finally:
        await jobs.stop()


async def _announce(app: web.Application) -> AsyncIterator[None]:
    advertiser = app[ADVERTISER]
    await advertiser.open()
    yield
    await advertiser.close()


def make_app(state: HubState, *, advertise: AdvertiseSettings | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=state.config.max_body_bytes
    )
    app[STATE] = state
    app.cleanup_ctx.extend([_service, _collateral, _kds, _replica_heartbeat])
    if advertise is not None:
        tee = evidence_kind(state.attester)
        app[ADVERTISER] = HubAdvertiser(advertise, tee=tee, key_id=state.identity.key_id)
        app.cleanup_ctx.append(_announce)
    app.router.add_get("/v1/health", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_post("/v1/attestation", handle_attestation)
    app.router.add_post("/v1/enroll", handle_enroll)
    app.router.add_post("/v1/escalate", handle_escalate)
    app.router.add_post("/v1/replicas", handle_replicas)
    # Signed bundles and their rollouts (docs/models.md).
    shelf = BundleShelf(
        state.config.data_dir / "bundles", parse_release_keys(state.config.release_keys)
    )
    add_bundle_routes(app, shelf)
    register_device_reports(
        app,
        state.service.store,
        state.identity,
        on_reveal=state.service.reveal,
        rollouts=RolloutDesk(state.service.store.engine),
    )
    app.add_subapp(ADMIN_PREFIX, admin_app(state.service, shelf=shelf))
    app.cleanup_ctx.append(_rollout_autopilot)
    return app
