"""The agent's local HTTP API for applications: /v1/infer and /v1/health."""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiohttp import web

from attestation import Verdict
from edge_agent.config import AgentConfig
from edge_agent.errors import HubUnavailable
from edge_agent.hub_client import HubClient
from edge_agent.identity import DeviceIdentity
from edge_agent.profile import FirmwareProfile
from edge_agent.router import HubAnswered, Routed, RouterState, compute_signals, decide, observe
from edge_agent.runtime import EdgeRuntime
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import error_middleware, json_response, read_json
from escalade_protocol.messages import (
    AgentHealth,
    AttestationSummary,
    InferRequest,
    InferResponse,
)


@dataclass(slots=True)
class AgentState:
    config: AgentConfig
    profile: FirmwareProfile
    runtime: EdgeRuntime
    identity: DeviceIdentity
    # The router's state: replaced (never mutated) after every decision and hub answer.
    router: RouterState
    rng: random.Random = field(default_factory=random.Random)
    client: HubClient | None = field(default=None)

    @property
    def hub_url(self) -> str:
        return self.config.hub_url or self.identity.hub_url


STATE = web.AppKey("state", AgentState)


def summarize(verdict: Verdict) -> AttestationSummary:
    return AttestationSummary(
        status=verdict.status.value,
        tee=verdict.tee,
        insecure=verdict.insecure,
        detail=verdict.summary(),
    )


async def handle_infer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    started = time.perf_counter()
    body = await read_json(request, InferRequest)
    manifest = state.runtime.manifest
    if len(body.input) != manifest.input_dim:
        raise ProtocolError(
            ErrorCode.BAD_TENSOR_SHAPE,
            f"input has {len(body.input)} values, the model takes {manifest.input_dim}",
        )
    features = np.asarray(body.input, dtype=np.float32)
    if not np.isfinite(features).all():
        raise ProtocolError(ErrorCode.NON_FINITE, "input holds NaN or infinite values")

    # The edge models take tens of microseconds: cheaper inline than a thread hop.
    local = state.runtime.infer(features)
    local_label = int(np.argmax(local.probabilities))
    # The same decision code the cascade benchmark measures (edge_agent/router.py).
    signals = compute_signals(local.probabilities, local.embedding, learned=local.learned)
    now = time.monotonic()
    assert state.client is not None
    decision = decide(
        state.router,
        signals,
        now=now,
        rng_draw=state.rng.random(),
        route=body.route,
        hub_up=state.client.hub_up,
    )
    state.router = observe(state.router, Routed(decision, now))

    label, probabilities, source = local_label, local.probabilities, "local"
    reason: str = decision.reason.value
    hub_label: int | None = None
    bytes_sent: int | None = None
    verdict = None
    if decision.escalate:
        asked = time.perf_counter()
        try:
            result = await state.client.escalate(local.embedding)
        except HubUnavailable as exc:
            reason = exc.reason
            verdict = state.client.last_verdict
        else:
            answered = HubAnswered(
                decision,
                agreed=result.answer.label == local_label,
                latency_ms=(time.perf_counter() - asked) * 1000.0,
            )
            state.router = observe(state.router, answered)
            verdict = result.verdict
            hub_label = label = result.answer.label
            probabilities = result.answer.probabilities.to_numpy().astype(np.float32)
            source = "hub"
            bytes_sent = result.bytes_sent

    response = InferResponse(
        label=label,
        source=source,
        reason=reason,
        confidence=decision.confidence,
        threshold=decision.threshold if math.isfinite(decision.threshold) else None,
        local_label=local_label,
        hub_label=hub_label,
        probabilities=[float(p) for p in probabilities],
        model_id=manifest.model_id,
        model_version=manifest.model_version,
        attestation=summarize(verdict) if verdict is not None else None,
        escalation_bytes=bytes_sent,
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )
    return json_response(response)


async def handle_health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    verdict = state.client.last_verdict if state.client else None
    refusal = state.client.device_refusal if state.client else None
    refused_attestation = verdict is not None and not verdict.allows_escalation
    degraded = refused_attestation or refusal is not None
    if refusal is not None:
        detail = f"the hub refuses this device ({refusal}): answering locally"
    elif refused_attestation:
        detail = "hub attestation refused: answering locally"
    else:
        detail = ""
    return json_response(
        AgentHealth(
            status="degraded" if degraded else "ok",
            device_id=state.identity.device_id,
            profile=state.profile.name,
            providers=state.runtime.providers,
            model_id=state.runtime.manifest.model_id,
            model_version=state.runtime.manifest.model_version,
            hub_url=state.hub_url,
            hub_attestation=summarize(verdict) if verdict else None,
            detail=detail,
        )
    )


def make_app(state: AgentState) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=4 << 20)
    app[STATE] = state

    async def hub_session(_app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            state.client = HubClient(
                http,
                base_url=state.hub_url,
                identity=state.identity,
                manifest=state.runtime.manifest,
                policy=state.config.policy,
                attestation_ttl_s=state.config.attestation_ttl_s,
                timeout_s=state.config.hub_timeout_s,
            )
            yield

    app.cleanup_ctx.append(hub_session)
    app.router.add_post("/v1/infer", handle_infer)
    app.router.add_get("/v1/health", handle_health)
    return app
