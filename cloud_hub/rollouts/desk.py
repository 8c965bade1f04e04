"""What the device-report handler asks about rollouts: record the model a device reports,
and say which bundle the rollouts assign it (blocking; run off the event loop)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from cloud_hub.rollouts.assign import assignment
from cloud_hub.store import Device
from cloud_hub.store.rollouts import list_rollouts, record_model_status
from escalade_protocol.device_reports import ModelStatus


class RolloutDesk:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def report(self, device: Device, statuses: Sequence[ModelStatus]) -> bytes | None:
        """Record `statuses`; the digest of the bundle assigned to `device` (None: its own)."""
        for status in statuses:
            record_model_status(self._engine, device.device_id, status)
        live = list_rollouts(self._engine, live_only=True)
        assigned = assignment(live, device.device_id, device.profile)
        return bytes.fromhex(assigned.bundle_digest) if assigned is not None else None
