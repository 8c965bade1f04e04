"""The admin API's endpoints (/admin/v1): one table that both registers the routes and
generates the OpenAPI document, so the two cannot disagree.

Every request needs `Authorization: Bearer <admin token>`; GETs need `admin:read`, changes
`admin:write`. Errors are `{"code", "message"}` with the status from `HTTP_STATUS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web

from cloud_hub.admin.endpoint import (
    NOT_FOUND_CONFLICT,
    Endpoint,
    Handler,
    parse_body,
    parse_query,
    path_uuid,
)
from cloud_hub.admin.enrollment_tokens import issue_token
from cloud_hub.admin.fleet import FLEET_ENDPOINTS
from cloud_hub.admin.models import (
    AuditEntry,
    AuditPage,
    ChainReport,
    DeviceOut,
    DevicePage,
    StatusChange,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
)
from cloud_hub.admin.queries import AuditQuery, DeviceQuery, NoQuery
from cloud_hub.admin.rollouts import BUNDLE_SHELF, ROLLOUT_ENDPOINTS
from cloud_hub.admin.tokens import Scope, authenticate
from cloud_hub.enrollment import token_hash
from cloud_hub.escalation import EscalationService
from cloud_hub.rollouts.shelf import BundleShelf
from cloud_hub.store.policies import load_policy
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import error_response, json_response

PREFIX = "/admin/v1"
ADMIN_SERVICE = web.AppKey("admin_service", EscalationService)


def _device_id(request: web.Request) -> uuid.UUID:
    return path_uuid(request, "device_id", "device")


# -- devices --------------------------------------------------------------------------------


async def list_devices(request: web.Request, service: EscalationService) -> web.Response:
    q = parse_query(DeviceQuery, request)
    rows = await service.blocking(
        service.store.page_devices,
        status=q.status,
        profile=q.profile,
        after=q.cursor,
        limit=q.limit,
    )
    cursor = str(rows[-1].device_id) if len(rows) == q.limit else None
    return json_response(DevicePage(items=[DeviceOut.of(d) for d in rows], next_cursor=cursor))


async def get_device(request: web.Request, service: EscalationService) -> web.Response:
    device = await service.blocking(service.store.get_device, _device_id(request))
    if device is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such device")
    return json_response(DeviceOut.of(device))


@dataclass(frozen=True, slots=True)
class _Change:
    status: str
    only_from: str | None
    action: str


_CHANGES = {
    "approve": _Change("active", "pending", "approve"),
    "release": _Change("active", "quarantined", "release"),
    "quarantine": _Change("quarantined", "active", "quarantine"),
    "revoke": _Change("revoked", None, "revoke"),
}


def _status_handler(name: str) -> Handler:
    change = _CHANGES[name]

    async def handle(request: web.Request, service: EscalationService) -> web.Response:
        device_id = _device_id(request)
        body = await parse_body(request, StatusChange)
        store = service.store
        if change.status == "revoked":
            device = await service.blocking(store.get_device, device_id)
            if device is not None and device.status == "revoked":
                raise ProtocolError(ErrorCode.CONFLICT, "device is already revoked")
        changed = await service.blocking(
            store.set_device_status,
            device_id,
            change.status,
            reason=body.reason,
            actor="admin",
            only_from=change.only_from,
            action=change.action,
        )
        device = await service.blocking(store.get_device, device_id)
        if device is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such device")
        if not changed:
            raise ProtocolError(
                ErrorCode.CONFLICT, f"cannot {name} a device that is {device.status}"
            )
        # This hub's cache drops the device at once (other replicas: at their next commit).
        service.device_changed(device_id)
        return json_response(DeviceOut.of(device))

    return handle


# -- enrollment tokens ----------------------------------------------------------------------


async def create_enrollment_token(request: web.Request, service: EscalationService) -> web.Response:
    body = await parse_body(request, TokenCreate)
    auto_approve = body.auto_approve
    if auto_approve is None:
        # Not said: the policy's default applies.
        auto_approve = (await service.blocking(load_policy, service.store.engine)).auto_approve
    secret, expires = await service.blocking(
        issue_token,
        service.store,
        ttl=timedelta(hours=body.ttl_hours),
        note=body.note,
        uses=body.uses,
        auto_approve=auto_approve,
        actor="admin",
    )
    created = TokenCreated(
        token=secret,
        token_id=token_hash(secret),
        expires_at=expires,
        uses=body.uses,
        auto_approve=auto_approve,
    )
    return json_response(created, status=201)


async def list_enrollment_tokens(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    tokens = await service.blocking(service.store.list_tokens)
    return json_response(TokenList(items=[TokenOut.of(t) for t in tokens]))


async def revoke_enrollment_token(request: web.Request, service: EscalationService) -> web.Response:
    token_id = request.match_info["token_id"]
    await parse_body(request, StatusChange)
    revoked = await service.blocking(service.store.revoke_token, token_id, actor="admin")
    tokens = await service.blocking(service.store.list_tokens)
    found = next((t for t in tokens if t.token_hash == token_id), None)
    if found is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such enrollment token")
    if not revoked:
        raise ProtocolError(ErrorCode.CONFLICT, "enrollment token is already revoked")
    return json_response(TokenOut.of(found))


# -- audit ----------------------------------------------------------------------------------


async def list_audit(request: web.Request, service: EscalationService) -> web.Response:
    q = parse_query(AuditQuery, request)
    events = await service.blocking(
        service.store.audit_log, q.device_id, after_id=q.cursor or 0, limit=q.limit
    )
    cursor = str(events[-1].id) if len(events) == q.limit else None
    return json_response(AuditPage(items=[AuditEntry.of(e) for e in events], next_cursor=cursor))


async def verify_audit(request: web.Request, service: EscalationService) -> web.Response:
    parse_query(NoQuery, request)
    verdict = await service.blocking(service.store.verify_audit_chain)
    return json_response(ChainReport.of(verdict))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/devices", "List devices (filters, cursor pagination)", list_devices,
             DevicePage, query=DeviceQuery),
    Endpoint("GET", "/devices/{device_id}", "Get a device", get_device, DeviceOut,
             errors=(400, 401, 403, 404)),
    *(
        Endpoint("POST", f"/devices/{{device_id}}/{name}", f"{name.capitalize()} a device",
                 _status_handler(name), DeviceOut, body=StatusChange, errors=NOT_FOUND_CONFLICT)
        for name in _CHANGES
    ),
    Endpoint("POST", "/enrollment-tokens", "Create an enrollment token (secret shown once)",
             create_enrollment_token, TokenCreated, body=TokenCreate, status=201),
    Endpoint("GET", "/enrollment-tokens", "List enrollment tokens", list_enrollment_tokens,
             TokenList),
    Endpoint("POST", "/enrollment-tokens/{token_id}/revoke", "Revoke an enrollment token",
             revoke_enrollment_token, TokenOut, body=StatusChange, errors=NOT_FOUND_CONFLICT),
    Endpoint("GET", "/audit", "Audit log entries, oldest first (cursor pagination)", list_audit,
             AuditPage, query=AuditQuery),
    Endpoint("GET", "/audit/verify", "Check the audit log's hash chain", verify_audit,
             ChainReport),
    *FLEET_ENDPOINTS,
    *ROLLOUT_ENDPOINTS,
)  # fmt: skip


def _unauthorized(message: str) -> web.Response:
    response = error_response(ProtocolError(ErrorCode.UNAUTHORIZED, message))
    response.headers["WWW-Authenticate"] = 'Bearer realm="escalade-admin"'
    return response


async def _authorized(request: web.Request, scope: Scope) -> web.Response | None:
    service = request.app[ADMIN_SERVICE]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("an admin bearer token is required")
    found = await service.blocking(authenticate, service.store, token.strip())
    if found is None:
        return _unauthorized("admin token is unknown, revoked or expired")
    if scope.value not in found.scopes:
        return error_response(
            ProtocolError(ErrorCode.FORBIDDEN, f"this token lacks the {scope.value} scope")
        )
    return None


def _route(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        refused = await _authorized(request, endpoint.scope)
        if refused is not None:
            return refused
        return await endpoint.handler(request, request.app[ADMIN_SERVICE])

    return handle


async def _openapi(request: web.Request) -> web.Response:
    from cloud_hub.admin.openapi import openapi_document

    refused = await _authorized(request, Scope.READ)
    if refused is not None:
        return refused
    return web.json_response(openapi_document(ENDPOINTS))


async def _not_found(request: web.Request) -> web.Response:
    refused = await _authorized(request, Scope.READ)
    if refused is not None:
        return refused
    raise ProtocolError(ErrorCode.NOT_FOUND, "no such admin endpoint")


def admin_app(service: EscalationService, *, shelf: BundleShelf | None = None) -> web.Application:
    """The /admin/v1 sub-application (the hub's error middleware applies to it too)."""
    app = web.Application()
    app[ADMIN_SERVICE] = service
    if shelf is not None:
        app[BUNDLE_SHELF] = shelf
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, _route(endpoint))
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app
