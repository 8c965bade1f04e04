"""The hub's persistence: every read and write of hub state goes through `Store`.

Methods are synchronous and short; the aiohttp handlers call them from a worker thread.
Each write is one transaction: a rejected request leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    make_url,
    or_,
    select,
    update,
)

from cloud_hub.audit import AuditEvidence, EnrollmentEvidence, OperatorEvidence
from cloud_hub.store import audit_log, schema_version
from cloud_hub.store.audit_chain import ChainVerdict, verify_chain
from cloud_hub.store.audit_log import AuditEvent
from cloud_hub.store.driver_insert import DriverInsert, RowResult
from cloud_hub.store.files import prepare_sqlite_file
from cloud_hub.store.schema import (
    admin_tokens,
    audit_events,
    devices,
    enrollment_tokens,
    escalations,
)
from escalade_protocol.errors import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class Device:
    device_id: uuid.UUID
    public_key: bytes
    profile: str
    status: str
    enrolled_at: datetime
    status_reason: str = ""
    status_changed_at: datetime | None = None
    generation: int = 0
    cusum: float = 0.0
    last_seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    token_hash: str
    created_at: datetime
    expires_at: datetime
    uses_left: int
    auto_approve: bool
    note: str
    used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AdminToken:
    token_hash: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class EscalationRecord:
    device_id: uuid.UUID
    nonce: bytes
    seq: int
    sent_at_ms: int
    model_id: str
    model_version: int
    label: int
    request_digest: bytes
    check_score: float = 0.0
    check_reason: str | None = None


@dataclass(frozen=True, slots=True)
class SavedReputation:
    """How far one hub moved a device's CUSUM since its last flush (merged, not overwritten:
    replicas sharing the database each move it)."""

    device_id: uuid.UUID
    generation: int
    delta: float


@dataclass(frozen=True, slots=True)
class StoreCounts:
    tokens: int
    tokens_used: int
    devices: int
    escalations: int


# The device lookup is built once, so SQLAlchemy reuses its compiled form: a statement rebuilt
# per request costs more than the database work itself.
_SELECT_DEVICE = select(devices).where(devices.c.device_id == bindparam("device_id"))
_ESCALATION_KEYS = (
    "device_id",
    "nonce",
    "seq",
    "sent_at_ms",
    "received_at",
    "model_id",
    "model_version",
    "label",
    "request_digest",
    "check_score",
    "check_reason",
)


def _escalation_row(record: EscalationRecord) -> dict[str, object]:
    return {
        "device_id": str(record.device_id),
        "nonce": record.nonce,
        "seq": record.seq,
        "sent_at_ms": record.sent_at_ms,
        "model_id": record.model_id,
        "model_version": record.model_version,
        "label": record.label,
        "request_digest": record.request_digest,
        "check_score": record.check_score,
        "check_reason": record.check_reason,
    }


_STATUS_ACTIONS = {
    "active": "release",
    "quarantined": "quarantine",
    "revoked": "revoke",
    "pending": "hold",
}


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; the hub writes only UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _device(row: Row[Any]) -> Device:
    return Device(
        device_id=uuid.UUID(row.device_id),
        public_key=bytes(row.public_key),
        profile=row.profile,
        status=row.status,
        enrolled_at=row.enrolled_at,
        status_reason=row.status_reason,
        status_changed_at=row.status_changed_at,
        generation=row.generation,
        cusum=row.cusum,
        last_seen_at=row.last_seen_at,
    )


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'hub.db'}"


def _sqlite_file(url: str) -> Path | None:
    """The database file an SQLite URL names (None: not SQLite, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers and the writer proceed together; synchronous=NORMAL keeps every commit
    # across a process crash (a power cut may lose the last few) and costs no fsync per commit.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def is_busy(error: BaseException) -> bool:
    """True for SQLite's "database is locked": another writer holds the lock, try later."""
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error)
    )


def _engine(url: str, *, create: bool) -> Engine:
    sqlite_file = _sqlite_file(url)
    if sqlite_file is None:
        return create_engine(url, pool_pre_ping=True)
    prepare_sqlite_file(sqlite_file, create=create)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def migrate_database(url: str) -> schema_version.MigrationReport:
    """Create the database if it is a missing SQLite file, and bring its schema to this
    build's head: what `cloud-hub migrate` does."""
    engine = _engine(url, create=True)
    try:
        return schema_version.upgrade(engine)
    finally:
        engine.dispose()


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert_escalations = DriverInsert(engine, escalations, devices, _ESCALATION_KEYS)

    @classmethod
    def open(cls, url: str, *, migrate: bool = False) -> Store:
        """Open the hub database at `url`, which must hold this build's schema.

        Nothing is created unless `migrate` is set: then a missing SQLite file is created (0600)
        and the schema brought to this build's head first (`migrate_database`). The hub itself
        never changes a schema. Raises a `cloud_hub.errors.DatabaseError` saying what to run.
        """
        if migrate:
            migrate_database(url)
        engine = _engine(url, create=False)
        try:
            schema_version.require_current(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def is_local(self) -> bool:
        """True for an embedded database (SQLite), whose statements never wait on a network."""
        return self.engine.dialect.name == "sqlite"

    def migrate(self) -> schema_version.MigrationReport:
        """Bring this database's schema to this build's head (Alembic migrations)."""
        return schema_version.upgrade(self.engine)

    def raw_connection(self, *, wait_for_locks: bool = True) -> Any:
        """A DBAPI connection for the record writer to hold. Without `wait_for_locks` (SQLite),
        a statement that finds the database locked fails at once instead of waiting: the
        event loop tries its commit and hands it to a thread when busy."""
        connection = self.engine.raw_connection()
        if not wait_for_locks and self.is_local:
            cursor = connection.cursor()
            cursor.execute("PRAGMA busy_timeout=0")
            # The WAL is checkpointed by a periodic job (`checkpoint`) on a worker thread, never
            # by a commit on the loop (a checkpoint writes pages and syncs the database file).
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()
        return connection

    def close(self) -> None:
        self.engine.dispose()

    # -- enrollment -------------------------------------------------------------------------

    def add_token(
        self,
        token_hash: str,
        *,
        ttl: timedelta,
        note: str = "",
        uses: int = 1,
        auto_approve: bool = True,
        audited_by: str | None = None,
    ) -> datetime:
        """Store an enrollment token's hash; with `audited_by` (admin, operator) its creation
        is logged in the audit log in the same transaction."""
        now = datetime.now(UTC)
        expires = now + ttl

        def work(conn: Connection) -> datetime:
            conn.execute(
                insert(enrollment_tokens).values(
                    token_hash=token_hash,
                    created_at=now,
                    expires_at=expires,
                    note=note,
                    uses_left=uses,
                    auto_approve=auto_approve,
                )
            )
            if audited_by is not None:
                approval = "active at once" if auto_approve else "pending approval"
                audit_log.append(
                    conn,
                    device_id=None,
                    action="token_create",
                    actor=audited_by,
                    reason=f"enrollment token {token_hash[:16]} for {uses} device(s), "
                    f"{approval}, until {expires:%Y-%m-%d %H:%M} UTC",
                    evidence=OperatorEvidence(),
                    at=now,
                )
            return expires

        if audited_by is None:
            with self.engine.begin() as conn:
                return work(conn)
        return audit_log.in_chained_transaction(self.engine, work)

    def list_tokens(self) -> list[EnrollmentToken]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(enrollment_tokens).order_by(enrollment_tokens.c.created_at)
            ).all()
        return [
            EnrollmentToken(
                token_hash=row.token_hash,
                created_at=_utc(row.created_at) or row.created_at,
                expires_at=_utc(row.expires_at) or row.expires_at,
                uses_left=row.uses_left,
                auto_approve=bool(row.auto_approve),
                note=row.note,
                used_at=_utc(row.used_at),
                revoked_at=_utc(row.revoked_at),
            )
            for row in rows
        ]

    def revoke_token(self, token_hash: str, *, actor: str = "operator") -> bool:
        """Make an enrollment token unusable; False if there is no such unrevoked token."""
        now = datetime.now(UTC)

        def work(conn: Connection) -> bool:
            revoked = conn.execute(
                update(enrollment_tokens)
                .where(
                    enrollment_tokens.c.token_hash == token_hash,
                    enrollment_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now, uses_left=0)
            ).rowcount
            if revoked != 1:
                return False
            audit_log.append(
                conn,
                device_id=None,
                action="token_revoke",
                actor=actor,
                reason=f"enrollment token {token_hash[:16]} revoked",
                evidence=OperatorEvidence(),
                at=now,
            )
            return True

        return audit_log.in_chained_transaction(self.engine, work)

    def enroll(self, *, token_hash: str, public_key: bytes, profile: str) -> uuid.UUID:
        """Spend one use of an enrollment token and record a new device, atomically: active
        if the token approves its devices, else pending an administrator's approval."""
        now = datetime.now(UTC)
        device_id = uuid.uuid4()

        def work(conn: Connection) -> uuid.UUID:
            # Claim a use with a conditional update: of two concurrent enrollments with the
            # token's last use, exactly one sees rowcount 1.
            claimed = conn.execute(
                update(enrollment_tokens)
                .where(
                    enrollment_tokens.c.token_hash == token_hash,
                    enrollment_tokens.c.uses_left > 0,
                    enrollment_tokens.c.revoked_at.is_(None),
                    enrollment_tokens.c.expires_at > now,
                )
                .values(
                    uses_left=enrollment_tokens.c.uses_left - 1,
                    used_at=now,
                    device_id=str(device_id),
                )
            ).rowcount
            if claimed != 1:
                raise ProtocolError(
                    ErrorCode.BAD_TOKEN, "enrollment token is unknown, used up, revoked or expired"
                )
            known = conn.execute(
                select(devices.c.device_id).where(devices.c.public_key == public_key)
            ).first()
            if known is not None:
                # Raising rolls the token claim back: the token stays usable.
                raise ProtocolError(ErrorCode.BAD_REQUEST, "this public key is already enrolled")
            approved = bool(
                conn.execute(
                    select(enrollment_tokens.c.auto_approve).where(
                        enrollment_tokens.c.token_hash == token_hash
                    )
                ).scalar_one()
            )
            conn.execute(
                insert(devices).values(
                    device_id=str(device_id),
                    public_key=public_key,
                    profile=profile,
                    status="active" if approved else "pending",
                    status_reason="" if approved else "awaiting approval",
                    enrolled_at=now,
                    last_seen_at=now,
                )
            )
            audit_log.append(
                conn,
                device_id=device_id,
                action="enroll",
                actor="device",
                reason=f"enrolled with token {token_hash[:16]}",
                evidence=EnrollmentEvidence(profile=profile, approved=approved),
                at=now,
            )
            return device_id

        return audit_log.in_chained_transaction(self.engine, work)

    def get_device(self, device_id: uuid.UUID) -> Device | None:
        with self.engine.connect() as conn:
            row = conn.execute(_SELECT_DEVICE, {"device_id": str(device_id)}).first()
        return None if row is None else _device(row)

    def list_devices(self) -> list[Device]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(devices).order_by(devices.c.enrolled_at)).all()
        return [_device(row) for row in rows]

    def page_devices(
        self,
        *,
        status: str | None = None,
        profile: str | None = None,
        after: uuid.UUID | None = None,
        limit: int = 100,
    ) -> list[Device]:
        """Devices in device-id order, filtered; `after` (the last id of the previous page)
        pages through them."""
        stmt = select(devices).order_by(devices.c.device_id).limit(limit)
        if status is not None:
            stmt = stmt.where(devices.c.status == status)
        if profile is not None:
            stmt = stmt.where(devices.c.profile == profile)
        if after is not None:
            stmt = stmt.where(devices.c.device_id > str(after))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_device(row) for row in rows]

    def set_device_status(
        self,
        device_id: uuid.UUID,
        status: str,
        *,
        reason: str,
        actor: str = "operator",
        evidence: AuditEvidence | None = None,
        only_from: str | None = None,
        generation: int | None = None,
        action: str | None = None,
    ) -> bool:
        """Change a device's status and log it, atomically; False if nothing matched.

        `only_from` and `generation` make the change conditional (the hub quarantines only an
        active device it has seen at that generation). Releasing a device clears its CUSUM.
        `action` names the change in the audit log (default: by the new status).
        """
        now = datetime.now(UTC)
        values: dict[str, object] = {
            "status": status,
            "status_reason": reason[:200],
            "status_changed_at": now,
            "generation": devices.c.generation + 1,
        }
        if status == "active":
            values["cusum"] = 0.0
        conditions = [devices.c.device_id == str(device_id)]
        if only_from is not None:
            conditions.append(devices.c.status == only_from)
        if generation is not None:
            conditions.append(devices.c.generation == generation)

        def work(conn: Connection) -> bool:
            changed = conn.execute(update(devices).where(*conditions).values(values)).rowcount
            if changed != 1:
                return False
            audit_log.append(
                conn,
                device_id=device_id,
                action=action or _STATUS_ACTIONS[status],
                actor=actor,
                reason=reason,
                evidence=evidence or OperatorEvidence(),
                at=now,
            )
            return True

        return audit_log.in_chained_transaction(self.engine, work)

    def add_audit_event(
        self,
        *,
        device_id: uuid.UUID | None,
        action: str,
        actor: str,
        reason: str,
        evidence: AuditEvidence,
    ) -> None:
        def work(conn: Connection) -> None:
            audit_log.append(
                conn,
                device_id=device_id,
                action=action,
                actor=actor,
                reason=reason,
                evidence=evidence,
            )

        audit_log.in_chained_transaction(self.engine, work)

    def save_reputation(self, device_id: uuid.UUID, *, generation: int, cusum: float) -> bool:
        """Store a device's CUSUM unless its status changed since `generation` was read."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(devices)
                .where(devices.c.device_id == str(device_id), devices.c.generation == generation)
                .values(cusum=cusum)
            ).rowcount
        return bool(changed == 1)

    def save_reputations(
        self, saved: Sequence[SavedReputation], *, ceiling: float
    ) -> dict[uuid.UUID, float]:
        """Merge several CUSUM movements in one transaction, each only where its generation
        still holds, clamped to [0, ceiling] as the CUSUM itself is. Returns the merged values
        (other replicas' movements included) of the devices written."""
        moved = devices.c.cusum + bindparam("delta")
        clamped = case((moved < 0.0, 0.0), (moved > ceiling, ceiling), else_=moved)
        stmt = (
            update(devices)
            .where(
                devices.c.device_id == bindparam("id"),
                devices.c.generation == bindparam("gen"),
            )
            .values(cusum=clamped)
            .returning(devices.c.cusum)
        )
        merged: dict[uuid.UUID, float] = {}
        with self.engine.begin() as conn:
            for item in saved:
                value = conn.execute(
                    stmt, {"id": str(item.device_id), "gen": item.generation, "delta": item.delta}
                ).scalar_one_or_none()
                if value is not None:
                    merged[item.device_id] = float(value)
        return merged

    def touch_devices(self, seen: Mapping[uuid.UUID, float]) -> None:
        """Record when devices were last seen (epoch seconds), never moving a time back."""
        t = devices.c
        stmt = (
            update(devices)
            .where(
                t.device_id == bindparam("id"),
                or_(t.last_seen_at.is_(None), t.last_seen_at < bindparam("at")),
            )
            .values(last_seen_at=bindparam("at"))
        )
        rows = [
            {"id": str(device_id), "at": datetime.fromtimestamp(at, UTC)}
            for device_id, at in seen.items()
        ]
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)

    def audit_log(
        self,
        device_id: uuid.UUID | None = None,
        *,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Entries in the order they were written; `after_id` and `limit` page through."""
        stmt = select(audit_events).where(audit_events.c.id > after_id).order_by(audit_events.c.id)
        if device_id is not None:
            stmt = stmt.where(audit_events.c.device_id == str(device_id))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [audit_log.event(row) for row in rows]

    def verify_audit_chain(self) -> ChainVerdict:
        """Check the whole audit log's hash chain; the verdict names the first broken link."""
        with self.engine.connect() as conn:
            return verify_chain(audit_log.chain_entries(conn))

    # -- admin tokens -----------------------------------------------------------------------

    def add_admin_token(
        self,
        token_hash: str,
        *,
        scopes: frozenset[str],
        ttl: timedelta | None = None,
        note: str = "",
    ) -> AdminToken:
        now = datetime.now(UTC)
        token = AdminToken(
            token_hash=token_hash,
            scopes=scopes,
            created_at=now,
            expires_at=now + ttl if ttl else None,
            note=note,
        )

        def work(conn: Connection) -> None:
            conn.execute(
                insert(admin_tokens).values(
                    token_hash=token_hash,
                    scopes=" ".join(sorted(scopes)),
                    created_at=now,
                    expires_at=token.expires_at,
                    note=note,
                )
            )
            audit_log.append(
                conn,
                device_id=None,
                action="admin_token_create",
                actor="operator",
                reason=f"admin token {token_hash[:16]} ({' '.join(sorted(scopes))})",
                evidence=OperatorEvidence(),
                at=now,
            )

        audit_log.in_chained_transaction(self.engine, work)
        return token

    def admin_token(self, token_hash: str) -> AdminToken | None:
        """The admin token with this hash, if it exists (expired or revoked ones included)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(admin_tokens).where(admin_tokens.c.token_hash == token_hash)
            ).first()
        if row is None:
            return None
        return AdminToken(
            token_hash=row.token_hash,
            scopes=frozenset(row.scopes.split()),
            created_at=_utc(row.created_at) or row.created_at,
            expires_at=_utc(row.expires_at),
            revoked_at=_utc(row.revoked_at),
            note=row.note,
        )

    # -- escalations ------------------------------------------------------------------------

    def record_escalation(self, record: EscalationRecord) -> None:
        """Durably record an accepted escalation; a repeated (device, nonce) is a replay."""
        (result,) = self.record_escalations([record])
        if isinstance(result, Exception):
            raise result
        if result is RowResult.REPLAYED:
            raise ProtocolError(ErrorCode.REPLAYED_NONCE, "this envelope's nonce was already used")
        if result is RowResult.DEVICE_INACTIVE:
            raise ProtocolError(ErrorCode.DEVICE_REVOKED, "device is not active")

    def record_escalations(
        self, records: Sequence[EscalationRecord], *, connection: Any = None
    ) -> list[RowResult | Exception]:
        """Insert records whose devices are active, in one transaction; per record, how it
        fared.

        The common case is one multi-row insert. If any row repeats a (device, nonce), has an
        inactive device or fails in the database, the batch is retried row by row so that
        only those rows are refused: one device's bad record never fails another's. A busy
        SQLite database (`is_busy`) is raised as it is, for the caller to retry elsewhere.
        """
        received = {"received_at": datetime.now(UTC)}
        rows = [_escalation_row(record) for record in records]
        with self._raw(connection) as conn:
            try:
                if self._insert_escalations.insert_all(conn, rows, received):
                    return [RowResult.INSERTED] * len(rows)
            except Exception as exc:
                if is_busy(exc):
                    raise
            results: list[RowResult | Exception] = []
            for row in rows:
                try:
                    results.append(self._insert_escalations.insert_one(conn, row, received))
                except Exception as exc:
                    if is_busy(exc):
                        raise
                    results.append(exc)
            return results

    def prune_escalations(self, *, sent_before_ms: int) -> int:
        """Delete replay records no envelope can collide with any more (sent before the
        timestamp window). Returns how many were deleted."""
        with self.engine.begin() as conn:
            deleted = conn.execute(
                delete(escalations).where(escalations.c.sent_at_ms < sent_before_ms)
            ).rowcount
        return int(deleted)

    def checkpoint(self) -> None:
        """Fold SQLite's write-ahead log back into the database file (a no-op elsewhere)."""
        if self.is_local:
            with self._raw(None) as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextlib.contextmanager
    def _raw(self, connection: Any) -> Iterator[Any]:
        if connection is not None:
            yield connection
            return
        pooled = self.engine.raw_connection()
        try:
            yield pooled
        finally:
            pooled.close()  # back to the pool

    def counts(self) -> StoreCounts:
        with self.engine.connect() as conn:

            def count(table: object, *where: object) -> int:
                stmt = select(func.count()).select_from(table)  # type: ignore[arg-type]
                if where:
                    stmt = stmt.where(*where)  # type: ignore[arg-type]
                return int(conn.execute(stmt).scalar_one())

            return StoreCounts(
                tokens=count(enrollment_tokens),
                tokens_used=count(enrollment_tokens, enrollment_tokens.c.used_at.is_not(None)),
                devices=count(devices),
                escalations=count(escalations),
            )
