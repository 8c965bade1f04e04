"""Bundles, rollouts and each device's reported model: blocking functions over an Engine.

Changes to bundles and rollouts are audited in the same transaction (the hash-chained log);
device model reports are upserted, one row per device (the latest report wins).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud_hub.audit import OperatorEvidence
from cloud_hub.rollouts.assign import AutoAdvance, Rollout, RolloutState
from cloud_hub.store import audit_log
from cloud_hub.store.schema import bundles, device_models, rollouts
from escalade_protocol.device_reports import NO_DIGEST, ModelStatus
from escalade_protocol.errors import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class BundleRecord:
    digest: str
    model_id: str
    model_version: int
    signer: str | None
    size_bytes: int
    registered_at: datetime
    note: str


@dataclass(frozen=True, slots=True)
class DeviceModel:
    device_id: uuid.UUID
    model_id: str
    model_version: int
    bundle_digest: str
    state: str
    target_digest: str | None
    code: str
    detail: str
    reported_at: datetime


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _bundle(row: Row[Any]) -> BundleRecord:
    r = row._mapping
    return BundleRecord(
        r["digest"],
        r["model_id"],
        r["model_version"],
        r["signer"],
        r["size_bytes"],
        _utc(r["registered_at"]),
        r["note"],
    )


def _rollout(row: Row[Any]) -> Rollout:
    r = row._mapping
    devices = r["devices"]
    return Rollout(
        rollout_id=r["id"],
        bundle_digest=r["bundle_digest"],
        devices=frozenset(uuid.UUID(d) for d in json.loads(devices)) if devices else None,
        profile=r["profile"],
        percent_bp=r["percent_bp"],
        state=RolloutState(r["state"]),
        created_at=_utc(r["created_at"]),
        updated_at=_utc(r["updated_at"]),
        note=r["note"],
        auto=AutoAdvance.model_validate_json(r["auto"]) if r["auto"] else None,
    )


def _device_model(row: Row[Any]) -> DeviceModel:
    r = row._mapping
    return DeviceModel(
        uuid.UUID(r["device_id"]),
        r["model_id"],
        r["model_version"],
        r["bundle_digest"],
        r["state"],
        r["target_digest"],
        r["code"],
        r["detail"],
        _utc(r["reported_at"]),
    )


def _audit(conn: Connection, action: str, reason: str, actor: str, at: datetime) -> None:
    audit_log.append(
        conn,
        device_id=None,
        action=action,
        actor=actor,
        reason=reason,
        evidence=OperatorEvidence(),
        at=at,
    )


# -- bundles --------------------------------------------------------------------------------


def register_bundle(engine: Engine, record: BundleRecord, *, actor: str = "admin") -> bool:
    """Record a bundle the shelf has stored; False if it was known already (idempotent)."""

    def work(conn: Connection) -> bool:
        known = conn.execute(select(bundles.c.digest).where(bundles.c.digest == record.digest))
        if known.first() is not None:
            return False
        conn.execute(
            insert(bundles).values(
                digest=record.digest,
                model_id=record.model_id,
                model_version=record.model_version,
                signer=record.signer,
                size_bytes=record.size_bytes,
                registered_at=record.registered_at,
                note=record.note,
            )
        )
        signed = f"signed by {record.signer}" if record.signer else "unsigned"
        reason = (
            f"bundle {record.digest[:16]} ({record.model_id} v{record.model_version}, {signed})"
        )
        _audit(conn, "bundle_register", reason, actor, record.registered_at)
        return True

    return audit_log.in_chained_transaction(engine, work)


def get_bundle(engine: Engine, digest: str) -> BundleRecord | None:
    with engine.connect() as conn:
        row = conn.execute(select(bundles).where(bundles.c.digest == digest)).first()
    return _bundle(row) if row is not None else None


def list_bundles(engine: Engine) -> list[BundleRecord]:
    with engine.connect() as conn:
        rows = conn.execute(select(bundles).order_by(bundles.c.registered_at)).all()
    return [_bundle(r) for r in rows]


# -- rollouts -------------------------------------------------------------------------------


def create_rollout(
    engine: Engine,
    *,
    digest: str,
    devices: Sequence[uuid.UUID] | None,
    profile: str | None,
    percent_bp: int,
    note: str = "",
    auto: AutoAdvance | None = None,
    actor: str = "admin",
) -> Rollout:
    now = datetime.now(UTC)

    def work(conn: Connection) -> Rollout:
        known = conn.execute(select(bundles.c.digest).where(bundles.c.digest == digest))
        if known.first() is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no bundle {digest[:16]}: upload it first")
        new_id = conn.execute(
            insert(rollouts).values(
                bundle_digest=digest,
                devices=json.dumps(sorted(str(d) for d in devices))
                if devices is not None
                else None,
                profile=profile,
                percent_bp=percent_bp,
                state=RolloutState.ACTIVE.value,
                created_at=now,
                updated_at=now,
                note=note,
                auto=auto.model_dump_json() if auto is not None else None,
            )
        ).inserted_primary_key
        assert new_id is not None
        target = (
            f"{len(devices)} devices"
            if devices is not None
            else f"{percent_bp / 100:g}%" + (f" of profile {profile}" if profile else "")
        )
        _audit(conn, "rollout_create", f"rollout of {digest[:16]} to {target}", actor, now)
        row = conn.execute(select(rollouts).where(rollouts.c.id == new_id[0])).one()
        return _rollout(row)

    return audit_log.in_chained_transaction(engine, work)


def list_rollouts(engine: Engine, *, live_only: bool = False) -> list[Rollout]:
    stmt = select(rollouts).order_by(rollouts.c.id)
    if live_only:
        stmt = stmt.where(rollouts.c.state != RolloutState.ROLLED_BACK.value)
    with engine.connect() as conn:
        return [_rollout(r) for r in conn.execute(stmt).all()]


def get_rollout(engine: Engine, rollout_id: int) -> Rollout | None:
    with engine.connect() as conn:
        row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
    return _rollout(row) if row is not None else None


# What a change does: from the rollout as it is, the new (state, percent_bp) and the reason.
Change = Callable[[Rollout], tuple[RolloutState, int, str]]


def change_rollout(
    engine: Engine, rollout_id: int, change: Change, *, action: str, actor: str = "admin"
) -> Rollout:
    """Apply `change` to the rollout as stored, audited, in one transaction."""
    now = datetime.now(UTC)

    def work(conn: Connection) -> Rollout:
        row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such rollout")
        state, percent_bp, reason = change(_rollout(row))
        conn.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout_id)
            .values(state=state.value, percent_bp=percent_bp, updated_at=now)
        )
        _audit(conn, action, f"rollout {rollout_id}: {reason}", actor, now)
        return _rollout(conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).one())

    return audit_log.in_chained_transaction(engine, work)


# -- device models --------------------------------------------------------------------------


def record_model_status(engine: Engine, device_id: uuid.UUID, status: ModelStatus) -> None:
    """The device's latest model report (an older report, by its own clock, changes nothing)."""
    values = {
        "model_id": status.model_id,
        "model_version": status.model_version,
        "bundle_digest": status.bundle_digest.hex(),
        "state": status.state.name.lower(),
        "target_digest": status.target_digest.hex() if status.target_digest != NO_DIGEST else None,
        "code": status.code[:32],
        "detail": status.detail[:200],
        "reported_at": datetime.fromtimestamp(status.at_ms / 1000, UTC),
    }
    key = str(device_id)
    for _ in range(2):  # a concurrent first report of the same device: update on the retry
        try:
            with engine.begin() as conn:
                row = conn.execute(
                    select(device_models.c.reported_at).where(device_models.c.device_id == key)
                ).first()
                if row is None:
                    conn.execute(insert(device_models).values(device_id=key, **values))
                elif _utc(row.reported_at) <= values["reported_at"]:  # type: ignore[operator]
                    conn.execute(
                        update(device_models)
                        .where(device_models.c.device_id == key)
                        .values(**values)
                    )
            return
        except IntegrityError:
            continue


def device_model(engine: Engine, device_id: uuid.UUID) -> DeviceModel | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(device_models).where(device_models.c.device_id == str(device_id))
        ).first()
    return _device_model(row) if row is not None else None


def all_device_models(engine: Engine) -> list[DeviceModel]:
    with engine.connect() as conn:
        rows = conn.execute(select(device_models).order_by(device_models.c.device_id)).all()
    return [_device_model(r) for r in rows]
