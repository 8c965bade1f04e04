"""The admin API's model catalogue, policy, stats and replica endpoints, over real loopback
HTTP against a real hub and database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from admin_stack import (
    DIGEST,
    REFERENCE,
    Admin,
    admin_fixture,  # noqa: F401 (the `admin` fixture)
    error_of,
)
from sqlalchemy import insert

from cloud_hub.admin.fleet_models import (
    DeviceStatsPage,
    ModelDetail,
    ModelPage,
    ModelStatsList,
    ModelVersionOut,
    PolicyOut,
    ReplicaPage,
)
from cloud_hub.admin.models import AuditPage, ChainReport, TokenCreated
from cloud_hub.admin.stats import percentile
from cloud_hub.device_reports.queries import store_outcomes
from cloud_hub.escalation.pipeline import EscalationPolicy
from cloud_hub.poisoning import ReputationParams
from cloud_hub.store import EscalationRecord
from cloud_hub.store.policies import HubPolicy, load_policy
from cloud_hub.store.schema import hub_replicas
from escalade_protocol.device_reports import OutcomePath, OutcomeRecord
from escalade_protocol.errors import ErrorCode


def _version(model_id: str = "digits", version: int = 1, **extra: object) -> dict[str, object]:
    return {
        "model_id": model_id,
        "version": version,
        "files": [
            {"path": "encoder.onnx", "sha256": DIGEST, "size": 1234},
            {"path": "calibration.npz", "sha256": DIGEST, "size": 99},
        ],
        "reference": REFERENCE,
        **extra,
    }


async def test_a_model_version_registers_once_and_lists(admin: Admin) -> None:
    status, raw = await admin.call("POST", "/models", json=_version(note="first"))
    assert status == 201, raw
    created = ModelVersionOut.model_validate_json(raw)
    assert (created.model_id, created.version, created.note) == ("digits", 1, "first")
    status, raw = await admin.call("POST", "/models", json=_version(version=2))
    assert status == 201
    status, raw = await admin.call("POST", "/models", json=_version())
    assert status == 409
    error_of(status, raw, ErrorCode.CONFLICT)

    status, raw = await admin.call("GET", "/models", token="read")
    (listed,) = ModelPage.model_validate_json(raw).items
    assert (listed.model_id, listed.versions) == ("digits", [1, 2])
    status, raw = await admin.call("GET", "/models/digits", token="read")
    detail = ModelDetail.model_validate_json(raw)
    assert [v.version for v in detail.versions] == [1, 2]
    assert detail.versions[0].files[0].sha256 == DIGEST
    assert detail.versions[0].reference.mahalanobis_high == 12.0
    status, raw = await admin.call("GET", "/models/nope", token="read")
    assert status == 404
    status, raw = await admin.call("GET", "/audit", token="read")
    actions = [e.action for e in AuditPage.model_validate_json(raw).items]
    assert actions.count("model_register") == 2


async def test_models_page_through_with_a_cursor(admin: Admin) -> None:
    for name in ("a", "b", "c"):
        status, _ = await admin.call("POST", "/models", json=_version(model_id=name))
        assert status == 201
    status, raw = await admin.call("GET", "/models?limit=2", token="read")
    first = ModelPage.model_validate_json(raw)
    assert [m.model_id for m in first.items] == ["a", "b"]
    status, raw = await admin.call("GET", f"/models?limit=2&cursor={first.next_cursor}")
    second = ModelPage.model_validate_json(raw)
    assert [m.model_id for m in second.items] == ["c"]
    assert second.next_cursor is None


@pytest.mark.parametrize(
    "change",
    [
        {"model_id": "Bad Name"},
        {"version": 0},
        {"version": 2**31},
        {"files": []},
        {"files": [{"path": "../etc/passwd", "sha256": DIGEST, "size": 1}]},
        {"files": [{"path": "a.onnx", "sha256": "XYZ", "size": 1}]},
        {"files": [{"path": "a", "sha256": DIGEST, "size": 1}] * 2},
        {"reference": {**REFERENCE, "norm_low": 10.0}},
        {"reference": {**REFERENCE, "extra": 1}},
        {"owner": "me"},
    ],
)
async def test_model_registrations_are_validated(admin: Admin, change: dict[str, object]) -> None:
    status, raw = await admin.call("POST", "/models", json={**_version(), **change})
    assert status == 400, change
    error_of(status, raw, ErrorCode.BAD_REQUEST)
    status, raw = await admin.call("GET", "/models", token="read")
    assert ModelPage.model_validate_json(raw).items == []


def test_the_default_policy_is_todays_behaviour() -> None:
    policy = HubPolicy()
    assert policy.timestamp_window_ms == EscalationPolicy().timestamp_window_ms
    assert policy.reject_score == EscalationPolicy().reject_score
    params = ReputationParams()
    r = policy.reputation
    assert (r.drift_allowance, r.decision_limit, r.failure_score, r.hold, r.ceiling) == (
        params.drift_allowance,
        params.decision_limit,
        params.failure_score,
        params.hold,
        params.ceiling,
    )


async def test_the_policy_is_set_validated_stored_and_audited(admin: Admin) -> None:
    status, raw = await admin.call("GET", "/policy", token="read")
    fresh = PolicyOut.model_validate_json(raw)
    assert (fresh.revision, fresh.policy, fresh.updated_at) == (0, HubPolicy(), None)

    wanted = {
        "timestamp_window_ms": 30_000,
        "reject_score": 1.5,
        "reputation": {"decision_limit": 15.0, "hold": 5},
        "auto_approve": False,
    }
    status, raw = await admin.call("PUT", "/policy", json=wanted)
    assert status == 200, raw
    stored = PolicyOut.model_validate_json(raw)
    assert stored.revision == 1
    assert stored.policy.reputation.hold == 5
    assert stored.policy.reputation.ceiling == 40.0  # unsaid: the default
    loaded = load_policy(admin.state.service.store.engine)
    assert loaded == stored.policy

    # The policy's auto_approve is what a token made without saying gets.
    status, raw = await admin.call("POST", "/enrollment-tokens", json={})
    assert TokenCreated.model_validate_json(raw).auto_approve is False

    for bad in (
        {"reject_score": 0.5},
        {"timestamp_window_ms": 0},
        {"reputation": {"decision_limit": 50.0}},  # over the ceiling
        {"reputation": {"drift_allowance": 3.0}},  # over the failure score
        {"reject_score": "1.5"},
        {"colour": "red"},
    ):
        status, raw = await admin.call("PUT", "/policy", json=bad)
        assert status == 400, bad
        error_of(status, raw, ErrorCode.BAD_REQUEST)
    assert load_policy(admin.state.service.store.engine) == stored.policy

    status, raw = await admin.call("PUT", "/policy", json={})
    assert PolicyOut.model_validate_json(raw).revision == 2
    assert load_policy(admin.state.service.store.engine) == HubPolicy()
    status, raw = await admin.call("GET", "/audit", token="read")
    updates = [e for e in AuditPage.model_validate_json(raw).items if e.action == "policy_update"]
    assert [e.reason.split(":")[0] for e in updates] == ["policy revision 1", "policy revision 2"]
    status, raw = await admin.call("GET", "/audit/verify", token="read")
    assert ChainReport.model_validate_json(raw).ok


def _outcome(path: OutcomePath, *, latency: int | None = None, error: str = "") -> OutcomeRecord:
    return OutcomeRecord(
        record_id=uuid.uuid4(),
        at_ms=int(time.time() * 1000),
        model_id="digits",
        model_version=1,
        path=path,
        reason="confident" if path is OutcomePath.LOCAL else "uncertain",
        local_label=3,
        hub_label=3 if path is OutcomePath.ESCALATED else None,
        signal=0.5,
        latency_us=2000,
        hub_latency_us=latency,
        hub_error=error,
    )


async def test_stats_count_outcomes_refusals_and_latency(admin: Admin) -> None:
    status, raw = await admin.call("POST", "/enrollment-tokens", json={"uses": 2})
    token = TokenCreated.model_validate_json(raw).token
    busy, quiet = await admin.enroll(token), await admin.enroll(token)
    store = admin.state.service.store
    records = [_outcome(OutcomePath.LOCAL) for _ in range(5)]
    records += [_outcome(OutcomePath.ESCALATED, latency=1000 * (i + 1)) for i in range(10)]
    records += [_outcome(OutcomePath.DEGRADED, error="embedding_rejected") for _ in range(3)]
    records += [_outcome(OutcomePath.DEGRADED, error="replayed_nonce")]
    store_outcomes(store.engine, busy, records)
    store_outcomes(store.engine, quiet, [_outcome(OutcomePath.LOCAL)])
    for seq in range(4):
        store.record_escalation(
            EscalationRecord(
                device_id=busy,
                nonce=os.urandom(16),
                seq=seq + 1,
                sent_at_ms=int(time.time() * 1000),
                model_id="digits",
                model_version=1,
                label=3,
                request_digest=os.urandom(32),
            )
        )

    status, raw = await admin.call("GET", "/stats/devices?limit=1", token="read")
    assert status == 200, raw
    first = DeviceStatsPage.model_validate_json(raw)
    status, raw = await admin.call("GET", f"/stats/devices?cursor={first.next_cursor}")
    second = DeviceStatsPage.model_validate_json(raw)
    by_device = {s.device_id: s.figures for s in first.items + second.items}
    assert set(by_device) == {busy, quiet}
    f = by_device[busy]
    assert (f.outcomes, f.answered_locally, f.escalated, f.degraded) == (19, 5, 10, 4)
    assert [(r.code, r.count) for r in f.refusals] == [
        ("embedding_rejected", 3),
        ("replayed_nonce", 1),
    ]
    assert f.hub_latency.samples == 10
    assert (f.hub_latency.p50_us, f.hub_latency.p90_us, f.hub_latency.p99_us) == (
        5000,
        9000,
        10000,
    )
    assert f.hub_accepted_recent == 4
    assert by_device[quiet].hub_latency.p50_us is None

    status, raw = await admin.call("GET", "/stats/models?model_id=digits", token="read")
    (model,) = ModelStatsList.model_validate_json(raw).items
    assert (model.model_id, model.model_version) == ("digits", 1)
    assert (model.figures.outcomes, model.figures.hub_accepted_recent) == (20, 4)

    # A window that ends before these records counts none of them.
    status, raw = await admin.call("GET", "/stats/models?since_hours=0.000001", token="read")
    assert ModelStatsList.model_validate_json(raw).items == []
    for query in ("?since_hours=0", "?since_hours=nan", "?since_hours=-1", "?cursor=x"):
        status, raw = await admin.call("GET", "/stats/devices" + query, token="read")
        assert status == 400, query


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, q) for q in (0.5, 0.9, 0.99)] == [50, 90, 99]
    assert percentile([7], 0.99) == 7
    assert percentile([], 0.5) is None


async def test_replicas_list_what_the_replicas_wrote(admin: Admin) -> None:
    now = datetime.now(UTC)
    with admin.state.service.store.engine.begin() as conn:
        for i in range(3):
            conn.execute(
                insert(hub_replicas).values(
                    replica_id=f"replica-{i}",
                    url=f"http://10.0.0.{i}:8443",
                    key_fingerprint=DIGEST,
                    tee="simulated",
                    started_at=now - timedelta(minutes=5),
                    heartbeat_at=now,
                    stopped_at=now if i == 2 else None,
                )
            )
    _, raw = await admin.call("GET", "/replicas?limit=2", token="read")
    first = ReplicaPage.model_validate_json(raw)
    assert [r.replica_id for r in first.items] == ["replica-0", "replica-1"]
    _, raw = await admin.call("GET", f"/replicas?cursor={first.next_cursor}", token="read")
    (last,) = ReplicaPage.model_validate_json(raw).items
    assert last.stopped_at is not None
    assert last.url == "http://10.0.0.2:8443"
