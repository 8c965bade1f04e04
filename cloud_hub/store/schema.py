"""Tables of the hub's database (SQLAlchemy Core; SQLite by default, PostgreSQL to scale out)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)

metadata = MetaData()

enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    # SHA-256 of the token: the token itself is never stored.
    Column("token_hash", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("device_id", String(36), nullable=True),
    Column("note", String(200), nullable=False, default=""),
    # How many more devices may enroll with it (1 for a one-time token).
    Column("uses_left", Integer, nullable=False, server_default="1"),
    # False: devices enrolled with it wait, `pending`, until an administrator approves them.
    Column("auto_approve", Boolean, nullable=False, server_default=true()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Bearer tokens of the admin API: only their SHA-256 is stored.
admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    # Space-separated: admin:read, admin:write.
    Column("scopes", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("note", String(200), nullable=False, default=""),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(36), primary_key=True),
    Column("public_key", LargeBinary(32), nullable=False, unique=True),
    Column("profile", String(64), nullable=False),
    # pending | active | quarantined | revoked
    Column("status", String(16), nullable=False),
    Column("status_reason", String(200), nullable=False, default=""),
    Column("status_changed_at", DateTime(timezone=True), nullable=True),
    # Bumped on every status change: reputation written by a hub that read an older generation
    # (say, before an operator's release) is discarded rather than resurrecting old suspicion.
    Column("generation", Integer, nullable=False, default=0),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    # Reputation: the one-sided CUSUM of standardised check scores. Honest devices sit at 0,
    # so it is written only while it moves (see cloud_hub/escalation/reputation_book.py).
    Column("cusum", Float, nullable=False, default=0.0),
    # Set at enrollment; later sightings are the escalation records' receive times.
    Column("last_seen_at", DateTime(timezone=True), nullable=True),
)

escalations = Table(
    "escalations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(36), ForeignKey("devices.device_id"), nullable=False),
    Column("nonce", LargeBinary(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sent_at_ms", BigInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("model_id", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("label", Integer, nullable=False),
    Column("request_digest", LargeBinary(32), nullable=False),
    # The poisoning checks' verdict: a standardised score, and the failed tier (NULL: passed).
    Column("check_score", Float, nullable=False, default=0.0),
    Column("check_reason", String(32), nullable=True),
    # The replay check: one accepted envelope per (device, nonce), enforced by the database so
    # that it holds across connections, threads and hub replicas alike.
    UniqueConstraint("device_id", "nonce", name="uq_escalations_device_nonce"),
    # Pruning deletes by send time: records older than the timestamp window can never collide
    # with an acceptable envelope again.
    Index("ix_escalations_sent_at_ms", "sent_at_ms"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("device_id", String(36), nullable=True),
    # quarantine | release | revoke
    Column("action", String(32), nullable=False),
    # hub | operator
    Column("actor", String(32), nullable=False),
    Column("reason", String(200), nullable=False),
    # JSON: the evidence the decision rests on (an `AuditEvidence` model's canonical JSON)
    Column("evidence", Text, nullable=False, default="{}"),
    # The hash chain (cloud_hub/store/audit_chain.py). The table is append-only: triggers made
    # by the migrations refuse UPDATE and DELETE; a unique prev_hash keeps the chain linear.
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    UniqueConstraint("prev_hash", name="uq_audit_events_prev_hash"),
)

# What enrolled devices report after the fact (POST /v1/device-reports): outcome records
# now, audit reveals later.
device_reports = Table(
    "device_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(36), nullable=False),
    # The device's id for the item: one row per (device, record id), whatever the retries.
    Column("record_id", String(36), nullable=False),
    # outcome (audit_reveal later)
    Column("kind", String(16), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("model_id", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    # local | escalated | degraded, and the agent's AnswerReason
    Column("path", String(16), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("local_label", Integer, nullable=False),
    Column("hub_label", Integer, nullable=True),
    Column("signal", Float, nullable=False),
    Column("latency_us", BigInteger, nullable=False),
    Column("hub_latency_us", BigInteger, nullable=True),
    Column("hub_error", String(32), nullable=False, default=""),
    # The item exactly as the device signed it (canonical encoding).
    Column("body", LargeBinary, nullable=False),
    UniqueConstraint("device_id", "record_id", name="uq_device_reports_device_record"),
)

# Hub processes sharing this database (scale-out): each registers at start, heartbeats, and
# marks itself stopped on a clean shutdown. A replica whose heartbeat is older than the
# liveness window drops out of the replica list the hubs hand to agents.
hub_replicas = Table(
    "hub_replicas",
    metadata,
    Column("replica_id", String(36), primary_key=True),
    # Where agents reach it (its advertised base URL).
    Column("url", String(200), nullable=False),
    # Hex SHA-256 of the replica's attested key bundle: what an agent's appraisal must match.
    Column("key_fingerprint", String(64), nullable=False),
    # The evidence type it attests with (sgx-gramine, simulated, ...).
    Column("tee", String(32), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("stopped_at", DateTime(timezone=True), nullable=True),
)

# The model catalogue (admin API): models, and each version registered with its files' digests
# and the summary of its reference statistics. Registration records what an administrator
# vouches for; the hub serves the bundle it was started with.
models = Table(
    "models",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model_id", String(64), ForeignKey("models.model_id"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("note", String(200), nullable=False, default=""),
    # JSON: the `ModelFiles` of cloud_hub/store/catalog.py (path -> SHA-256, sizes).
    Column("files", Text, nullable=False),
    # JSON: the `ReferenceSummary` (band edges, dims, the calibration file's digest).
    Column("reference", Text, nullable=False),
)

# The hub's policy (replay window, poisoning thresholds, auto-approval): one row per name
# ("hub"), the document as typed JSON (cloud_hub/store/policies.py). No row: the defaults.
policies = Table(
    "policies",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("document", Text, nullable=False),
    # Bumped on every update, so a replica can tell it holds an older policy.
    Column("revision", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Signed model bundles the hub keeps (files in <data dir>/bundles/<digest>/), by digest.
bundles = Table(
    "bundles",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("model_id", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    # The release key id whose signature verified (NULL: no key pinned when uploaded).
    Column("signer", String(16), nullable=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("note", String(200), nullable=False, default=""),
)

# Rollouts: a bundle assigned to explicit devices (JSON list), or to a share of the fleet
# (basis points, optionally within a profile), by a stable hash of each device id.
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bundle_digest", String(64), ForeignKey("bundles.digest"), nullable=False),
    Column("devices", Text, nullable=True),
    Column("profile", String(64), nullable=True),
    Column("percent_bp", Integer, nullable=False),
    # active | paused | rolled_back
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("note", String(200), nullable=False, default=""),
    # JSON: the AutoAdvance bounds (NULL: advanced by an administrator only).
    Column("auto", Text, nullable=True),
)

# The bundle each device last said it runs (its signed ModelStatus reports).
device_models = Table(
    "device_models",
    metadata,
    Column("device_id", String(36), primary_key=True),
    Column("model_id", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("bundle_digest", String(64), nullable=False),
    # current | pending | rolled_back | refused (escalade_protocol.device_reports.BundleState)
    Column("state", String(16), nullable=False),
    Column("target_digest", String(64), nullable=True),
    Column("code", String(32), nullable=False, default=""),
    Column("detail", String(200), nullable=False, default=""),
    Column("reported_at", DateTime(timezone=True), nullable=False),
)

# What each device's answered escalations cost (revision 0008): running totals, added to by
# every replica's periodic flush (`cloud_hub.store.costs`).
device_costs = Table(
    "device_costs",
    metadata,
    Column("device_id", String(36), primary_key=True),
    Column("answers", BigInteger, nullable=False),
    Column("model_us", BigInteger, nullable=False),
    Column("request_bytes", BigInteger, nullable=False),
    Column("price_micros", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
