"""The model catalogue: models and their registered versions, each with its files' digests and
the summary of its reference statistics. Blocking functions over an SQLAlchemy Engine.

A registration is what an administrator vouches for (the digests agents and replicas can be
checked against); the hub still serves the bundle it was started with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from sqlalchemy import Connection, Engine, Row, func, insert, select

from cloud_hub.audit import OperatorEvidence
from cloud_hub.store import audit_log
from cloud_hub.store.schema import model_versions, models
from escalade_protocol.artifacts import ArtifactFile, ModelManifest
from escalade_protocol.bundles import artifacts
from escalade_protocol.errors import ErrorCode, ProtocolError

# As a bundle manifest's model_id (escalade_protocol.artifacts.ModelManifest).
MODEL_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class FileDigest(_Doc):
    # Relative to the bundle directory, no way out of it.
    path: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$")
    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=0, le=1 << 40)

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise ValueError("must stay inside the bundle directory")
        return value


class ReferenceSummary(_Doc):
    """The scalars of a version's reference statistics (the matrices stay in its calibration
    file, whose digest pins them)."""

    embedding_dim: int = Field(ge=1, le=1 << 16)
    num_classes: int = Field(ge=2, lt=1 << 16)
    target_fpr: float = Field(gt=0, lt=1)
    norm_low: float
    norm_high: float
    mahalanobis_low: float
    mahalanobis_high: float
    class_mahalanobis_high: float
    calibration_sha256: str = Field(pattern=SHA256_PATTERN)

    @field_validator(
        "norm_low", "norm_high", "mahalanobis_low", "mahalanobis_high", "class_mahalanobis_high"
    )
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError("must be a finite, non-negative number")
        return value

    @model_validator(mode="after")
    def _bands(self) -> ReferenceSummary:
        if self.norm_low > self.norm_high or self.mahalanobis_low > self.mahalanobis_high:
            raise ValueError("a band's low edge lies above its high edge")
        return self


FILES = TypeAdapter(tuple[FileDigest, ...])


def bundle_artifacts(manifest: ModelManifest) -> list[ArtifactFile]:
    """Every file a bundle's manifest names (what a registration lists)."""
    return artifacts(manifest)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    model_id: str
    version: int
    registered_at: datetime
    note: str
    files: tuple[FileDigest, ...]
    reference: ReferenceSummary


@dataclass(frozen=True, slots=True)
class ModelSummary:
    model_id: str
    created_at: datetime
    versions: tuple[int, ...]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _version(row: Row[Any]) -> ModelVersion:
    r = row._mapping
    return ModelVersion(
        model_id=r["model_id"],
        version=r["version"],
        registered_at=_utc(r["registered_at"]),
        note=r["note"],
        files=FILES.validate_json(r["files"]),
        reference=ReferenceSummary.model_validate_json(r["reference"]),
    )


def register_version(
    engine: Engine,
    *,
    model_id: str,
    version: int,
    files: tuple[FileDigest, ...],
    reference: ReferenceSummary,
    note: str = "",
    actor: str = "admin",
) -> ModelVersion:
    """Record a model version (and its model, the first time), audited, in one transaction.
    Raises `ProtocolError(CONFLICT)` if that version is registered already: a version's
    digests never change once vouched for."""
    now = datetime.now(UTC)
    registered = ModelVersion(model_id, version, now, note, files, reference)

    def work(conn: Connection) -> ModelVersion:
        exists = conn.execute(
            select(model_versions.c.version).where(
                model_versions.c.model_id == model_id, model_versions.c.version == version
            )
        ).first()
        if exists is not None:
            raise ProtocolError(ErrorCode.CONFLICT, f"{model_id} v{version} is already registered")
        known = conn.execute(select(models.c.model_id).where(models.c.model_id == model_id))
        if known.first() is None:
            conn.execute(insert(models).values(model_id=model_id, created_at=now))
        conn.execute(
            insert(model_versions).values(
                model_id=model_id,
                version=version,
                registered_at=now,
                note=note,
                files=FILES.dump_json(files).decode(),
                reference=reference.model_dump_json(),
            )
        )
        audit_log.append(
            conn,
            device_id=None,
            action="model_register",
            actor=actor,
            reason=f"model {model_id} v{version} registered ({len(files)} files)",
            evidence=OperatorEvidence(),
            at=now,
        )
        return registered

    return audit_log.in_chained_transaction(engine, work)


def list_models(
    engine: Engine, *, after: str | None = None, limit: int = 100
) -> list[ModelSummary]:
    """Models in id order, each with its registered versions; `after` pages through."""
    stmt = select(models).order_by(models.c.model_id).limit(limit)
    if after is not None:
        stmt = stmt.where(models.c.model_id > after)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        ids = [row.model_id for row in rows]
        versions: dict[str, list[int]] = {i: [] for i in ids}
        if ids:
            for model_id, version in conn.execute(
                select(model_versions.c.model_id, model_versions.c.version)
                .where(model_versions.c.model_id.in_(ids))
                .order_by(model_versions.c.model_id, model_versions.c.version)
            ).all():
                versions[model_id].append(version)
    return [ModelSummary(r.model_id, _utc(r.created_at), tuple(versions[r.model_id])) for r in rows]


def model_versions_of(engine: Engine, model_id: str) -> list[ModelVersion] | None:
    """Every registered version of a model, oldest first; None if there is no such model."""
    with engine.connect() as conn:
        known = conn.execute(select(func.count()).where(models.c.model_id == model_id)).scalar_one()
        if not known:
            return None
        rows = conn.execute(
            select(model_versions)
            .where(model_versions.c.model_id == model_id)
            .order_by(model_versions.c.version)
        ).all()
    return [_version(row) for row in rows]
