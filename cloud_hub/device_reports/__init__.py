"""``POST /v1/device-reports``: what enrolled devices report after the fact, signed.

One generic endpoint for every kind of device report (`escalade_protocol.device_reports`):
outcome records now, audit reveals later. The hub checks the report's signature against the
device's enrolled key (the device must be active), that it names this hub's attested key, and
stores each item once, deduplicated by (device, record id). It answers with an ack signed by its
answer-signing key that lists every id of the report it now holds (stored now or before), so the
device can delete exactly those. Reports are idempotent, so a replayed report changes nothing.
A version-2 report may carry `ModelStatus` items (the bundle the device runs, recorded by the
`RolloutDesk`), and its ack names the bundle the rollouts assign the device.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy import Engine

from cloud_hub.device_reports.queries import count_outcomes, store_outcomes
from cloud_hub.escalation.pipeline import device_refusal
from cloud_hub.identity import HubIdentity
from cloud_hub.rollouts.desk import RolloutDesk
from cloud_hub.store import Device, Store
from escalade_protocol.device_reports import (
    ACK_CONTENT_TYPE,
    ASSIGNMENT_VERSION,
    AuditReveal,
    ModelStatus,
    OutcomeRecord,
    ReportAck,
    read_report,
)
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import read_body
from escalade_protocol.keys import load_ed25519_public

log = logging.getLogger("cloud_hub.device_reports")

GetDevice = Callable[[uuid.UUID], Awaitable[Device | None]]
# Checks one audit reveal of an active device (the hub's auditor).
OnReveal = Callable[[Device, AuditReveal], Awaitable[object]]
PATH = "/v1/device-reports"


def add_device_report_routes(
    app: web.Application,
    *,
    engine: Engine,
    identity: HubIdentity,
    get_device: GetDevice,
    on_reveal: OnReveal | None = None,
    rollouts: RolloutDesk | None = None,
) -> None:
    """Register ``POST /v1/device-reports`` (its table comes with migration 0004)."""

    async def handle(request: web.Request) -> web.Response:
        body = await read_body(request)
        signed = read_report(body)
        report = signed.report
        device = await get_device(report.device_id)
        if device is None:
            raise ProtocolError(ErrorCode.UNKNOWN_DEVICE, "unknown device")
        signed.verify(load_ed25519_public(device.public_key))
        refused = device_refusal(device)  # the escalation path's rule, after the signature
        if refused is not None:
            raise refused
        if not hmac.compare_digest(report.hub_key_id, identity.key_id):
            raise ProtocolError(ErrorCode.UNKNOWN_HUB_KEY, "report names another hub key")
        outcomes = [i for i in report.items if isinstance(i, OutcomeRecord)]
        reveals = [i for i in report.items if isinstance(i, AuditReveal)]
        statuses = [i for i in report.items if isinstance(i, ModelStatus)]
        if reveals and on_reveal is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "this hub does not audit")
        loop = asyncio.get_running_loop()
        held = (
            await loop.run_in_executor(None, store_outcomes, engine, device.device_id, outcomes)
            if outcomes
            else []
        )
        for reveal in reveals:
            assert on_reveal is not None
            # Judged (or found stale) now, never stored: the device may drop it once acked.
            await on_reveal(device, reveal)
            held.append(reveal.record_id)
        assigned = None
        if report.version >= ASSIGNMENT_VERSION and rollouts is not None:
            assigned = await loop.run_in_executor(None, rollouts.report, device, statuses)
            held.extend(s.record_id for s in statuses)
        log.debug(
            "device %s reported %d outcomes, %d reveals",
            device.device_id,
            len(outcomes),
            len(reveals),
        )
        ack = ReportAck(
            hub_key_id=identity.key_id,
            report_digest=signed.digest,
            known=tuple(held),
            version=report.version,
            assigned=assigned,
        )
        return web.Response(body=ack.sign(identity.signing_key), content_type=ACK_CONTENT_TYPE)

    app.router.add_post(PATH, handle)


def register_device_reports(
    app: web.Application,
    store: Store,
    identity: HubIdentity,
    on_reveal: OnReveal | None = None,
    rollouts: RolloutDesk | None = None,
) -> None:
    """`add_device_report_routes` for a hub `Store` (device lookups run off the event loop)."""

    async def get_device(device_id: uuid.UUID) -> Device | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, store.get_device, device_id)

    add_device_report_routes(
        app,
        engine=store.engine,
        identity=identity,
        get_device=get_device,
        on_reveal=on_reveal,
        rollouts=rollouts,
    )


__all__ = ["PATH", "add_device_report_routes", "count_outcomes", "register_device_reports"]
