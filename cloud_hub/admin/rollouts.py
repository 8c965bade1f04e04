"""Admin endpoints for signed bundles and their rollouts (registered by routes.py).

POST /bundles                      upload a bundle (tar of its directory), verified
POST /rollouts                     assign it to devices, a profile or a share of the fleet
POST /rollouts/{id}/advance        1% -> 10% -> 100% (or a given share); pause, resume,
POST /rollouts/{id}/rollback       rollback (its devices go back to their previous bundle)
GET  /device-models, /devices/{id}/model, /rollouts/{id}: what each device reports it runs
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from cloud_hub.admin.endpoint import (
    NOT_FOUND_CONFLICT,
    Endpoint,
    Handler,
    parse_body,
    parse_query,
    path_uuid,
)
from cloud_hub.admin.queries import NoQuery
from cloud_hub.admin.rollout_models import (
    BundleList,
    BundleOut,
    DeviceModelList,
    DeviceModelOut,
    RolloutAdvance,
    RolloutChange,
    RolloutCreate,
    RolloutDetail,
    RolloutList,
    RolloutOut,
    RolloutTally,
)
from cloud_hub.escalation import EscalationService
from cloud_hub.rollouts import Rollout, RolloutState, advanced, assignment
from cloud_hub.rollouts.shelf import MAX_BUNDLE_BYTES, BundleShelf
from cloud_hub.store import Device, Store
from cloud_hub.store import rollouts as table
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import json_response

BUNDLE_SHELF = web.AppKey("bundle_shelf", BundleShelf)
TAR = "application/x-tar"
# What the OpenAPI document names (generic clients know how to send it); any type is read.
UPLOAD_MEDIA_TYPE = "application/octet-stream"


def _shelf(request: web.Request) -> BundleShelf:
    shelf = request.app.get(BUNDLE_SHELF)
    if shelf is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "this hub keeps no bundles")
    return shelf


def _all_devices(store: Store) -> list[Device]:
    out: list[Device] = []
    after = None
    while True:
        page = store.page_devices(after=after, limit=500)
        out.extend(page)
        if len(page) < 500:
            return out
        after = page[-1].device_id


# -- bundles --------------------------------------------------------------------------------


async def upload_bundle(request: web.Request, service: EscalationService) -> web.Response:
    shelf = _shelf(request)
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > MAX_BUNDLE_BYTES:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"a bundle is at most {MAX_BUNDLE_BYTES >> 20} MiB"
            )
    if not body:
        raise ProtocolError(ErrorCode.BUNDLE_MALFORMED, "send the bundle as a tar archive")

    def store_it() -> table.BundleRecord:
        archive = shelf.incoming()
        archive.write_bytes(body)
        shelved = shelf.accept(archive)
        existing = table.get_bundle(service.store.engine, shelved.digest)
        if existing is not None:
            return existing
        note = request.query.get("note", "")[:200]
        record = table.BundleRecord(
            digest=shelved.digest,
            model_id=shelved.manifest.model_id,
            model_version=shelved.manifest.model_version,
            signer=shelved.signer,
            size_bytes=shelved.size_bytes,
            registered_at=datetime.now(UTC),
            note=note,
        )
        table.register_bundle(service.store.engine, record)
        return table.get_bundle(service.store.engine, shelved.digest) or record

    record = await asyncio.to_thread(store_it)
    return json_response(BundleOut.of(record), status=201)


async def list_bundles(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    rows = await service.blocking(table.list_bundles, service.store.engine)
    return json_response(BundleList(items=[BundleOut.of(b) for b in rows]))


async def get_bundle(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    found = await service.blocking(
        table.get_bundle, service.store.engine, request.match_info["digest"]
    )
    if found is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such bundle")
    return json_response(BundleOut.of(found))


# -- rollouts -------------------------------------------------------------------------------


def _rollout_id(request: web.Request) -> int:
    raw = request.match_info["rollout_id"]
    if not raw.isdigit() or len(raw) > 9:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such rollout")
    return int(raw)


async def create_rollout(request: web.Request, service: EscalationService) -> web.Response:
    body = await parse_body(request, RolloutCreate)
    created = await service.blocking(
        table.create_rollout,
        service.store.engine,
        digest=body.bundle_digest,
        devices=body.devices,
        profile=body.profile,
        percent_bp=body.percent_bp,
        note=body.note,
        auto=body.auto,
    )
    return json_response(RolloutOut.of(created), status=201)


async def list_rollouts(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    rows = await service.blocking(table.list_rollouts, service.store.engine)
    return json_response(RolloutList(items=[RolloutOut.of(r) for r in rows]))


def _fleet_view(
    store: Store, only: Callable[[Rollout | None], bool] | None = None
) -> list[DeviceModelOut]:
    """Every device with its reported model and current assignment (blocking)."""
    live = table.list_rollouts(store.engine, live_only=True)
    reported = {m.device_id: m for m in table.all_device_models(store.engine)}
    out = []
    for device in _all_devices(store):
        assigned = assignment(live, device.device_id, device.profile)
        if only is None or only(assigned):
            out.append(
                DeviceModelOut.of(device.device_id, reported.get(device.device_id), assigned)
            )
    return out


async def get_rollout(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    rollout_id = _rollout_id(request)
    rollout = await service.blocking(table.get_rollout, service.store.engine, rollout_id)
    if rollout is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such rollout")
    devices = await service.blocking(
        _fleet_view,
        service.store,
        lambda a: a is not None and a.rollout_id == rollout_id,
    )

    def count(state: str) -> int:
        return sum(
            1 for d in devices if d.target_digest == rollout.bundle_digest and d.state == state
        )

    tally = RolloutTally(
        assigned=len(devices),
        running=sum(1 for d in devices if d.bundle_digest == rollout.bundle_digest),
        pending=count("pending"),
        rolled_back=count("rolled_back"),
        refused=count("refused"),
    )
    return json_response(
        RolloutDetail(rollout=RolloutOut.of(rollout), tally=tally, devices=devices)
    )


async def advance_rollout(request: web.Request, service: EscalationService) -> web.Response:
    body = await parse_body(request, RolloutAdvance)

    def change(r: Rollout) -> tuple[RolloutState, int, str]:
        target = advanced(r, body.percent_bp)
        return r.state, target, f"advanced to {target / 100:g}% ({body.reason})"

    changed = await service.blocking(
        table.change_rollout,
        service.store.engine,
        _rollout_id(request),
        change,
        action="rollout_advance",
    )
    return json_response(RolloutOut.of(changed))


def _state_handler(name: str, to: RolloutState, allowed: frozenset[RolloutState]) -> Handler:
    async def handler(request: web.Request, service: EscalationService) -> web.Response:
        body = await parse_body(request, RolloutChange)

        def change(r: Rollout) -> tuple[RolloutState, int, str]:
            if r.state not in allowed:
                raise ProtocolError(
                    ErrorCode.CONFLICT, f"cannot {name} a rollout that is {r.state}"
                )
            return to, r.percent_bp, f"{name} ({body.reason})"

        changed = await service.blocking(
            table.change_rollout,
            service.store.engine,
            _rollout_id(request),
            change,
            action=f"rollout_{name}",
        )
        return json_response(RolloutOut.of(changed))

    handler.__name__ = f"{name}_rollout"
    return handler


_LIVE = frozenset({RolloutState.ACTIVE, RolloutState.PAUSED})
_STATE_CHANGES = {
    "pause": (RolloutState.PAUSED, frozenset({RolloutState.ACTIVE})),
    "resume": (RolloutState.ACTIVE, frozenset({RolloutState.PAUSED})),
    "rollback": (RolloutState.ROLLED_BACK, _LIVE),
}


# -- device models --------------------------------------------------------------------------


async def list_device_models(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    items = await service.blocking(_fleet_view, service.store)
    return json_response(DeviceModelList(items=items))


async def get_device_model(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    device_id = path_uuid(request, "device_id", "device")

    def view() -> DeviceModelOut | None:
        device = service.store.get_device(device_id)
        if device is None:
            return None
        live = table.list_rollouts(service.store.engine, live_only=True)
        reported = table.device_model(service.store.engine, device_id)
        return DeviceModelOut.of(device_id, reported, assignment(live, device_id, device.profile))

    found = await service.blocking(view)
    if found is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such device")
    return json_response(found)


_UPLOAD_ERRORS = (400, 401, 403, 413, 422)

ROLLOUT_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/bundles", "Upload a bundle (tar of its directory), checked against the "
             "pinned release keys", upload_bundle, BundleOut, status=201, errors=_UPLOAD_ERRORS,
             raw_body=UPLOAD_MEDIA_TYPE),
    Endpoint("GET", "/bundles", "List the bundles this hub keeps", list_bundles, BundleList),
    Endpoint("GET", "/bundles/{digest}", "Get a bundle", get_bundle, BundleOut,
             errors=(400, 401, 403, 404)),
    Endpoint("POST", "/rollouts", "Assign a bundle to devices, a profile or a share of the fleet",
             create_rollout, RolloutOut, body=RolloutCreate, status=201,
             errors=NOT_FOUND_CONFLICT, body_required=True),
    Endpoint("GET", "/rollouts", "List rollouts, oldest first", list_rollouts, RolloutList),
    Endpoint("GET", "/rollouts/{rollout_id}", "A rollout, its devices and what they run",
             get_rollout, RolloutDetail, errors=(400, 401, 403, 404)),
    Endpoint("POST", "/rollouts/{rollout_id}/advance", "Widen a rollout (the ladder's next step "
             "or a given percent)", advance_rollout, RolloutOut, body=RolloutAdvance,
             errors=NOT_FOUND_CONFLICT),
    *(
        Endpoint("POST", f"/rollouts/{{rollout_id}}/{name}", f"{name.capitalize()} a rollout",
                 _state_handler(name, to, allowed), RolloutOut, body=RolloutChange,
                 errors=NOT_FOUND_CONFLICT)
        for name, (to, allowed) in _STATE_CHANGES.items()
    ),
    Endpoint("GET", "/device-models", "Every device's reported model and its assignment",
             list_device_models, DeviceModelList),
    Endpoint("GET", "/devices/{device_id}/model", "A device's reported model and assignment",
             get_device_model, DeviceModelOut, errors=(400, 401, 403, 404)),
)  # fmt: skip
