"""Admin endpoints for the model catalogue, the hub's policy, stats and replicas (the device,
token and audit endpoints are in cloud_hub/admin/routes.py, which registers these too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from cloud_hub.admin.endpoint import Endpoint, parse_body, parse_query
from cloud_hub.admin.fleet_models import (
    DeviceCost,
    DeviceStats,
    DeviceStatsPage,
    Figures,
    ModelDetail,
    ModelOut,
    ModelPage,
    ModelRegister,
    ModelStats,
    ModelStatsList,
    ModelVersionOut,
    PolicyOut,
    ReplicaOut,
    ReplicaPage,
)
from cloud_hub.admin.queries import (
    DeviceStatsQuery,
    ModelQuery,
    ModelStatsQuery,
    NoQuery,
    ReplicaQuery,
    StatsWindow,
)
from cloud_hub.admin.replicas import page_replicas
from cloud_hub.admin.stats import device_tallies, model_tallies
from cloud_hub.escalation import EscalationService
from cloud_hub.store import catalog, policies
from cloud_hub.store.costs import CostTotals, device_cost_totals
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import json_response

# -- models ---------------------------------------------------------------------------------


async def register_model_version(request: web.Request, service: EscalationService) -> web.Response:
    body = await parse_body(request, ModelRegister)
    registered = await service.blocking(
        catalog.register_version,
        service.store.engine,
        model_id=body.model_id,
        version=body.version,
        files=tuple(body.files),
        reference=body.reference,
        note=body.note,
    )
    return json_response(ModelVersionOut.of(registered), status=201)


async def list_models(request: web.Request, service: EscalationService) -> web.Response:
    q = parse_query(ModelQuery, request)
    rows = await service.blocking(
        catalog.list_models, service.store.engine, after=q.cursor, limit=q.limit
    )
    cursor = rows[-1].model_id if len(rows) == q.limit else None
    return json_response(ModelPage(items=[ModelOut.of(m) for m in rows], next_cursor=cursor))


async def get_model(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    model_id = request.match_info["model_id"]
    versions = await service.blocking(catalog.model_versions_of, service.store.engine, model_id)
    if versions is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such model")
    detail = ModelDetail(model_id=model_id, versions=[ModelVersionOut.of(v) for v in versions])
    return json_response(detail)


# -- policy ---------------------------------------------------------------------------------


async def get_policy(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    stored = await service.blocking(policies.load_stored_policy, service.store.engine)
    return json_response(PolicyOut.of(stored))


async def put_policy(request: web.Request, service: EscalationService) -> web.Response:
    body = await parse_body(request, policies.HubPolicy)
    stored = await service.blocking(policies.save_policy, service.store.engine, body)
    return json_response(PolicyOut.of(stored))


# -- stats ----------------------------------------------------------------------------------


def _since(q: StatsWindow) -> datetime:
    return datetime.now(UTC) - timedelta(hours=q.since_hours)


async def device_stats(request: web.Request, service: EscalationService) -> web.Response:
    q = parse_query(DeviceStatsQuery, request)
    since = _since(q)
    rows = await service.blocking(
        device_tallies, service.store.engine, since=since, after=q.cursor, limit=q.limit
    )
    costs = await service.blocking(device_cost_totals, service.store.engine, [d for d, _ in rows])
    items = [
        DeviceStats(device_id=d, figures=Figures.of(t), cost=_cost(costs.get(d))) for d, t in rows
    ]
    cursor = str(rows[-1][0]) if len(rows) == q.limit else None
    return json_response(DeviceStatsPage(since=since, items=items, next_cursor=cursor))


def _cost(totals: CostTotals | None) -> DeviceCost | None:
    if totals is None:
        return None
    return DeviceCost(
        answers=totals.answers,
        model_ms=totals.model_us / 1000,
        request_bytes=totals.request_bytes,
        price=totals.price_micros / 1e6,
    )


async def model_stats(request: web.Request, service: EscalationService) -> web.Response:
    q = parse_query(ModelStatsQuery, request)
    since = _since(q)
    rows = await service.blocking(
        model_tallies, service.store.engine, since=since, model_id=q.model_id
    )
    items = [ModelStats(model_id=m, model_version=v, figures=Figures.of(t)) for m, v, t in rows]
    return json_response(ModelStatsList(since=since, items=items))


# -- replicas -------------------------------------------------------------------------------


async def list_replicas(request: web.Request, service: EscalationService) -> web.Response:
    q = parse_query(ReplicaQuery, request)
    rows = await service.blocking(
        page_replicas, service.store.engine, after=q.cursor, limit=q.limit
    )
    cursor = rows[-1].replica_id if len(rows) == q.limit else None
    return json_response(ReplicaPage(items=[ReplicaOut.of(r) for r in rows], next_cursor=cursor))


FLEET_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/models", "Register a model version (files' digests, reference stats)",
             register_model_version, ModelVersionOut, body=ModelRegister, status=201,
             errors=(400, 401, 403, 409)),
    Endpoint("GET", "/models", "List models and their versions (cursor pagination)",
             list_models, ModelPage, query=ModelQuery),
    Endpoint("GET", "/models/{model_id}", "Get a model's registered versions", get_model,
             ModelDetail, errors=(400, 401, 403, 404)),
    Endpoint("GET", "/policy", "The hub's policy (defaults until set)", get_policy, PolicyOut),
    Endpoint("PUT", "/policy", "Replace the hub's policy (validated; omitted fields: defaults)",
             put_policy, PolicyOut, body=policies.HubPolicy),
    Endpoint("GET", "/stats/devices", "Per-device escalations, refusals by code, latency",
             device_stats, DeviceStatsPage, query=DeviceStatsQuery),
    Endpoint("GET", "/stats/models", "Per-model-version escalations, refusals, latency",
             model_stats, ModelStatsList, query=ModelStatsQuery),
    Endpoint("GET", "/replicas", "Hub replicas sharing this database", list_replicas,
             ReplicaPage, query=ReplicaQuery),
)  # fmt: skip
