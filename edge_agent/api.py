"""The agent's local HTTP API for applications.

- ``POST /v1/infer`` (the simple form) and the Open Inference Protocol (KServe v2), so any KServe
  or Triton client works unchanged: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready`` (503
  until the models are warm; ready while degraded, with the reasons), ``GET /v2/models/{name}``,
  ``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (JSON tensors and the binary
  tensor extension). `edge_agent.v2` holds the v2 wire format.
- ``GET /v1/health``: ok or degraded, with typed reasons; ``GET /metrics``: Prometheus text.

Every answer says where it came from and why (`AnswerPath`, `AnswerReason`), and its outcome
record is committed to the outbox before it leaves. Requests must be ``application/json`` (or
the v2 binary type); cross-origin browser requests are refused unless the origin is configured;
an optional bearer token is compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from attestation import Verdict
from edge_agent import v2
from edge_agent.audit_store import AuditStore
from edge_agent.auditing import AuditResponder
from edge_agent.batcher import MicroBatcher
from edge_agent.bundle_update import BundleUpdater
from edge_agent.config import AUTO, AgentConfig
from edge_agent.discovery import MdnsSettings, on_lan
from edge_agent.discovery.announce import agent_advert
from edge_agent.domain import BundleDomain
from edge_agent.errors import HubUnavailable
from edge_agent.graphs.serve import GRAPHS, add_graph_routes, load_graphs
from edge_agent.graphs.serve import calibrate as calibrate_graphs
from edge_agent.hub_choice import CandidateSource, CandidateView
from edge_agent.hub_client import HubClient
from edge_agent.hub_pool import CandidateInfo, HubPool, Hubs
from edge_agent.identity import DeviceIdentity
from edge_agent.metrics import AgentMetrics
from edge_agent.outbox import Outbox
from edge_agent.profile import FirmwareProfile
from edge_agent.router import (
    Decision,
    HubAnswered,
    Reason,
    Routed,
    RouterState,
    compute_signals,
    decide,
    observe,
)
from edge_agent.runtime import F32, EdgeRuntime
from edge_agent.transport import AiohttpTransport
from escalade_protocol.answer import Answer
from escalade_protocol.device_reports import OutcomePath, OutcomeRecord
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import Handler, handle_errors, json_response, read_json
from escalade_protocol.hub_keys import suite_named
from escalade_protocol.messages import (
    AgentHealth,
    AnswerPath,
    AnswerReason,
    AttestationSummary,
    ErrorBody,
    HealthReason,
    HubRouting,
    InferRequest,
    InferResponse,
    Route,
)

log = logging.getLogger("edge_agent.api")

_ROUTER_REASONS = {r: AnswerReason(r.value) for r in Reason if r is not Reason.HUB_DOWN}
_PATH_CODES = {
    AnswerPath.LOCAL: OutcomePath.LOCAL,
    AnswerPath.ESCALATED: OutcomePath.ESCALATED,
    AnswerPath.DEGRADED: OutcomePath.DEGRADED,
}
_HEALTH_REASONS = {
    AnswerReason.HUB_UNREACHABLE: HealthReason.HUB_UNREACHABLE,
    AnswerReason.HUB_TIMEOUT: HealthReason.HUB_TIMEOUT,
    AnswerReason.ATTESTATION_REFUSED: HealthReason.ATTESTATION_REFUSED,
    AnswerReason.MODEL_MISMATCH: HealthReason.MODEL_MISMATCH,
    AnswerReason.DEVICE_REFUSED: HealthReason.DEVICE_REFUSED,
    AnswerReason.HUB_RATE_LIMITED: HealthReason.HUB_RATE_LIMITED,
    AnswerReason.BAD_ANSWER: HealthReason.HUB_REJECTED,
    AnswerReason.HUB_REJECTED: HealthReason.HUB_REJECTED,
}
JSON_TYPES = frozenset({"application/json"})


@dataclass(slots=True)
class AgentState:
    config: AgentConfig
    profile: FirmwareProfile
    runtime: EdgeRuntime
    identity: DeviceIdentity
    # The router's state: replaced (never mutated) after every decision and hub answer.
    router: RouterState
    domain: BundleDomain
    outbox: Outbox
    api_token: bytes | None = None
    rng: random.Random = field(default_factory=random.Random)
    client: Hubs | None = None
    batcher: MicroBatcher | None = None
    # Keeps escalated inputs for the audit window and answers the hub's audits.
    audits: AuditResponder | None = None
    metrics: AgentMetrics | None = None
    ready: bool = False
    # Answers in progress: a request alone in the agent skips the batching and commit hops.
    inflight: int = 0
    # Follows the hub's bundle rollouts: swaps `runtime`, `batcher` and `domain` (on the loop).
    bundles: BundleUpdater | None = None

    @property
    def configured_hub(self) -> str:
        """The configured hub: a URL, or "auto" (discovered on the LAN)."""
        return self.config.hub_url or self.identity.hub_url

    @property
    def hub_url(self) -> str:
        """The hub in use: the configured URL, or the discovered one ("auto" while none)."""
        client = self.client
        if isinstance(client, HubPool):
            return client.current_url or self.configured_hub
        return self.configured_hub


STATE = web.AppKey("state", AgentState)


def summarize(verdict: Verdict) -> AttestationSummary:
    return AttestationSummary(
        status=verdict.status.value,
        tee=verdict.tee,
        insecure=verdict.insecure,
        detail=verdict.summary(),
    )


_BUDGETS = frozenset(
    {AnswerReason.BUDGET_MINUTE, AnswerReason.BUDGET_DAY, AnswerReason.LATENCY_BUDGET}
)


def _local_outcome(
    decision: Decision, client: Hubs, *, out_of_domain: bool
) -> tuple[AnswerPath, AnswerReason, ErrorCode | None]:
    """Path and reason of the answer before any escalation (typed, from the router's reason)."""
    if out_of_domain:
        return AnswerPath.LOCAL, AnswerReason.OUT_OF_DOMAIN, None
    if decision.reason is Reason.HUB_DOWN:
        status = client.status()
        return (
            AnswerPath.DEGRADED,
            status.failure or AnswerReason.HUB_UNREACHABLE,
            status.failure_code,
        )
    reason = _ROUTER_REASONS[decision.reason]
    return (AnswerPath.DEGRADED if reason in _BUDGETS else AnswerPath.LOCAL), reason, None


async def answer(state: AgentState, features: F32, route: Route) -> InferResponse:
    """One input through the local models, the router and perhaps the hub; recorded."""
    state.inflight += 1
    try:
        return await _answer(state, features, route)
    finally:
        state.inflight -= 1


async def _answer(  # noqa: PLR0915 (one request's whole story, read top to bottom)
    state: AgentState, features: F32, route: Route
) -> InferResponse:
    started = time.perf_counter()
    manifest = state.runtime.manifest
    if features.shape != (manifest.input_dim,):
        raise ProtocolError(
            ErrorCode.BAD_TENSOR_SHAPE,
            f"input has {features.size} values, the model takes {manifest.input_dim}",
        )
    if not np.isfinite(features).all():
        raise ProtocolError(ErrorCode.NON_FINITE, "input holds NaN or infinite values")
    domain = state.domain.inputs
    out_of_domain = domain is not None and not domain.contains(features)
    if out_of_domain:
        assert domain is not None
        if state.config.out_of_domain == "refuse":
            raise ProtocolError(
                ErrorCode.OUT_OF_DOMAIN,
                f"input values lie outside the model's domain [{domain.low:g}, {domain.high:g}]",
            )
        features = domain.clip(features)
    assert state.batcher is not None
    assert state.client is not None
    client = state.client
    local = await state.batcher.infer(features, alone=state.inflight == 1)
    local_label = int(np.argmax(local.probabilities))
    signals = compute_signals(local.probabilities, local.embedding, learned=local.learned)
    now = time.monotonic()
    decision = decide(
        state.router,
        signals,
        now=now,
        rng_draw=state.rng.random(),
        route="local" if out_of_domain else route,
        hub_up=client.hub_up,
    )
    if not out_of_domain:
        state.router = observe(state.router, Routed(decision, now))

    path, reason, hub_error = _local_outcome(decision, client, out_of_domain=out_of_domain)
    label, probabilities = local_label, local.probabilities
    hub_label = bytes_sent = hub_latency_us = None
    routing: HubRouting | None = None
    verdict = None
    bands = state.domain.bands if state.config.check_embedding_bands else None
    if decision.escalate and bands is not None and bands.would_be_refused(local.embedding):
        # The hub would refuse this embedding and count it against the device: keep it local.
        path, reason = AnswerPath.DEGRADED, AnswerReason.EMBEDDING_OUT_OF_BAND
    elif decision.escalate:
        asked = time.perf_counter()
        try:
            result = await client.escalate(
                local.embedding, features=features, local_probs=local.probabilities
            )
        except HubUnavailable as exc:
            path, reason, hub_error = AnswerPath.DEGRADED, exc.reason, exc.code
            verdict = client.last_verdict
        else:
            latency = time.perf_counter() - asked
            hub_latency_us = int(latency * 1e6)
            agreed = result.answer.label == local_label
            state.router = observe(
                state.router, HubAnswered(decision, agreed=agreed, latency_ms=latency * 1e3)
            )
            verdict = result.verdict
            hub_label = label = result.answer.label
            probabilities = result.answer.probabilities.to_numpy().astype(np.float32)
            path = AnswerPath.ESCALATED
            bytes_sent = result.bytes_sent
            routing = hub_routing(result.answer)
            if state.audits is not None:
                state.audits.escalated(result)

    record_id = uuid.uuid4()
    latency_s = time.perf_counter() - started
    await state.outbox.add(
        OutcomeRecord(
            record_id=record_id,
            at_ms=time.time_ns() // 1_000_000,
            model_id=manifest.model_id,
            model_version=manifest.model_version,
            path=_PATH_CODES[path],
            reason=reason.value,
            local_label=local_label,
            hub_label=hub_label,
            signal=decision.confidence,
            latency_us=int(latency_s * 1e6),
            hub_latency_us=hub_latency_us,
            hub_error=hub_error.value if hub_error is not None else "",
        ),
        alone=state.inflight == 1,
    )
    if state.metrics is not None:
        state.metrics.answered(path, reason, latency_s)
    return InferResponse(
        label=label,
        source="hub" if path is AnswerPath.ESCALATED else "local",
        path=path,
        reason=reason,
        hub_error=hub_error,
        confidence=float(probabilities[label]),
        signal=decision.confidence,
        threshold=decision.threshold if np.isfinite(decision.threshold) else None,
        local_label=local_label,
        hub_label=hub_label,
        probabilities=[float(p) for p in probabilities],
        out_of_domain=out_of_domain,
        model_id=manifest.model_id,
        model_version=manifest.model_version,
        attestation=summarize(verdict) if verdict is not None else None,
        escalation_bytes=bytes_sent,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        record_id=record_id,
        hub=routing,
    )


def hub_routing(answer: Answer) -> HubRouting:
    return HubRouting(
        models=list(answer.models),
        route_reason=answer.route_reason.name.lower(),
        fusion=answer.fusion.name.lower(),
        model_us=answer.cost.model_us,
        price_micros=answer.cost.price_micros,
        request_bytes=answer.cost.request_bytes,
    )


def _require_ready(state: AgentState) -> None:
    if not state.ready:
        raise ProtocolError(ErrorCode.NOT_READY, "the agent is starting: models not warm yet")


async def handle_infer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _require_ready(state)
    body = await read_json(request, InferRequest)
    features = np.asarray(body.input, dtype=np.float64)
    with np.errstate(over="ignore"):
        features32 = features.astype(np.float32)
    if np.isfinite(features).all() and not np.isfinite(features32).all():
        # Beyond float32's range: say so rather than warn about an overflow in the logs.
        raise ProtocolError(ErrorCode.NON_FINITE, "input values overflow float32")
    return json_response(await answer(state, features32, body.route))


class HubCandidates(BaseModel):
    """`GET /v1/hubs`: the configured hub ("auto" or a URL) and every candidate, in use first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    configured: str
    hubs: list[CandidateView]


def hub_candidates(state: AgentState) -> HubCandidates:
    client = state.client
    views = client.candidates() if isinstance(client, HubPool) else []
    return HubCandidates(
        configured=state.configured_hub,
        hubs=views,
    )


async def handle_hubs(request: web.Request) -> web.Response:
    return json_response(hub_candidates(request.app[STATE]))


def health(state: AgentState) -> AgentHealth:
    client = state.client
    reasons: list[HealthReason] = []
    hub_error = None
    verdict = None
    breaker = "closed"
    if not state.ready:
        reasons.append(HealthReason.NOT_READY)
    if client is not None:
        status = client.status()
        verdict = status.last_verdict
        breaker = status.breaker.value
        if status.failure is not None:
            reasons.append(_HEALTH_REASONS.get(status.failure, HealthReason.HUB_REJECTED))
            hub_error = status.failure_code
        elif not status.attested and state.ready:
            reasons.append(HealthReason.NOT_ATTESTED)
        refusal = client.device_refusal
        if refusal is not None and HealthReason.DEVICE_REFUSED not in reasons:
            reasons.append(HealthReason.DEVICE_REFUSED)
            hub_error = refusal.code
    detail = ""
    if client is not None and reasons:
        status = client.status()
        detail = status.failure_detail or (
            str(client.device_refusal) if client.device_refusal else ""
        )
        detail = (detail + "; " if detail else "") + "answering locally"
    attested = state.client.attested if state.client is not None else None
    audits = state.audits
    return AgentHealth(
        status="degraded" if reasons else "ok",
        reasons=reasons,
        hub_error=hub_error,
        breaker=breaker,
        ready=state.ready,
        device_id=state.identity.device_id,
        profile=state.profile.name,
        providers=state.runtime.providers,
        model_id=state.runtime.manifest.model_id,
        model_version=state.runtime.manifest.model_version,
        hub_url=state.hub_url,
        hub_attestation=summarize(verdict) if verdict else None,
        outbox_depth=state.outbox.depth,
        outbox_dropped=state.outbox.dropped,
        audit_rate=attested.audit_rate if attested is not None else 0.0,
        audits=audits.audited if audits is not None else 0,
        audits_revealed=audits.revealed if audits is not None else 0,
        audits_failed=audits.failed if audits is not None else 0,
        bundle=state.bundles.health() if state.bundles is not None else None,
        detail=detail,
    )


async def handle_health(request: web.Request) -> web.Response:
    return json_response(health(request.app[STATE]))


async def handle_metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    assert state.metrics is not None
    body, content_type = state.metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# --- security and errors -----------------------------------------------------------------------


def _security(state: AgentState) -> web.middleware:  # type: ignore[valid-type]
    allowed = frozenset(state.config.allowed_origins)
    open_paths = frozenset({"/v2/health/live", "/v2/health/ready"})

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin not in allowed:
            # What a browser sends cross-site: refused whatever the method or content type.
            raise ProtocolError(
                ErrorCode.FORBIDDEN_ORIGIN, f"origin {origin} may not call this agent"
            )
        if state.api_token is not None and request.path not in open_paths:
            given = request.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), state.api_token
            ):
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "missing or wrong bearer token")
        if request.method == "POST":
            allowed_types = v2.CONTENT_TYPES if request.path.startswith("/v2/") else JSON_TYPES
            binary = v2.HEADER_LENGTH in request.headers and request.path.startswith("/v2/")
            if request.content_type not in allowed_types and not binary:
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    f"content type {request.content_type} is not accepted; send application/json",
                )
        response = await handler(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return middleware


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handle_errors(request, handler)
    if (
        request.path.startswith("/v2")
        and response.status >= 400
        and isinstance(response, web.Response)
    ):
        # KServe v2 clients read {"error": message}; the stable code travels beside it.
        assert response.body is not None
        error = ErrorBody.model_validate_json(bytes(response.body))  # type: ignore[arg-type]
        v2_body = {"error": error.message, "code": error.code.value}
        response.body = json.dumps(v2_body).encode()
    return response


# --- lifecycle ---------------------------------------------------------------------------------


def make_app(state: AgentState) -> web.Application:
    app = web.Application(middlewares=[errors, _security(state)], client_max_size=4 << 20)
    app[STATE] = state
    state.metrics = AgentMetrics(state)
    state.batcher = MicroBatcher(
        state.runtime,
        max_batch=state.config.max_batch_size,
        max_wait_s=state.config.max_batch_wait_ms / 1000.0,
    )

    graphs = load_graphs(state)
    app[GRAPHS] = graphs

    async def hub_session(_app: web.Application) -> AsyncIterator[None]:
        from edge_agent.service import run_background

        state.runtime.warm_up()
        calibrate_graphs(state, graphs)
        config = state.config
        async with aiohttp.ClientSession() as http:

            def hub_client(url: str, info: CandidateInfo) -> HubClient:
                return HubClient(
                    AiohttpTransport(http, url),
                    identity=state.identity,
                    manifest=state.runtime.manifest,
                    policy=config.policy,
                    attestation_ttl_s=config.attestation_ttl_s,
                    timeout_s=config.hub_timeout_s,
                    breaker_cooldown_s=config.breaker_cooldown_s,
                    breaker_max_cooldown_s=config.breaker_max_cooldown_s,
                    expected_key_id=bytes.fromhex(info.kfp) if info.kfp else None,
                    minimum_suite=suite_named(config.min_hpke_suite),
                )

            pool = HubPool(hub_client)
            state.client = pool
            discovering = state.configured_hub == AUTO
            if not discovering:
                pool.set_candidates(CandidateSource.STATIC, {state.configured_hub: CandidateInfo()})
            advert = (
                agent_advert(
                    device_id=str(state.identity.device_id),
                    public_key=state.identity.public_key,
                    profile=state.profile.name,
                )
                if config.advertise
                else None
            )
            if state.config.audit_window_s > 0:
                store = AuditStore(state.config.data_dir, window_s=state.config.audit_window_s)
                state.audits = AuditResponder(store, client_for=pool.client_for)
            lan = MdnsSettings(interfaces=config.discovery_interfaces, ipv6=config.discovery_ipv6)
            async with (
                on_lan(
                    lan,
                    pool=pool if discovering else None,
                    advert=advert,
                    port=config.port,
                ),
                run_background(state),
            ):
                yield
        state.outbox.close()
        for executor in graphs.values():
            executor.close()
        log.info("agent stopped")

    app.cleanup_ctx.append(hub_session)
    app.router.add_post("/v1/infer", handle_infer)
    app.router.add_get("/v1/health", handle_health)
    app.router.add_get("/v1/hubs", handle_hubs)
    app.router.add_get("/metrics", handle_metrics)
    add_graph_routes(app, STATE, list(graphs))  # before the bundle model's /v2/models/{name}
    v2.add_routes(app, STATE, answer)
    return app
