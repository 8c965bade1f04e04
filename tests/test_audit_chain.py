"""Enrollment tokens with uses and approval, and the append-only, hash-chained audit log, on
real databases; the chain's verification as a pure function, with Hypothesis."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from enrollment import enroll_request
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from cloud_hub.audit import EnrollmentEvidence, OperatorEvidence
from cloud_hub.enrollment import create_token, enroll
from cloud_hub.store import Store
from cloud_hub.store.audit_chain import GENESIS, ChainEntry, entry_hash, verify_chain
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import Ed25519PrivateKey


def _enroll(store: Store, token: str) -> uuid.UUID:
    return enroll(store, enroll_request(token, Ed25519PrivateKey.generate()))


def test_a_token_enrolls_as_many_devices_as_it_has_uses(store: Store) -> None:
    token, _ = create_token(store, uses=2)
    first, second = _enroll(store, token), _enroll(store, token)
    assert first != second
    with pytest.raises(ProtocolError) as refused:
        _enroll(store, token)
    assert refused.value.code is ErrorCode.BAD_TOKEN
    (listed,) = store.list_tokens()
    assert listed.uses_left == 0
    assert store.counts().devices == 2


def test_a_revoked_token_enrolls_nothing(store: Store) -> None:
    token, _ = create_token(store, uses=5)
    (listed,) = store.list_tokens()
    assert store.revoke_token(listed.token_hash)
    assert not store.revoke_token(listed.token_hash)
    with pytest.raises(ProtocolError):
        _enroll(store, token)
    assert store.counts().devices == 0


def test_without_auto_approval_a_device_waits_pending_until_approved(store: Store) -> None:
    token, _ = create_token(store, auto_approve=False)
    device_id = _enroll(store, token)
    device = store.get_device(device_id)
    assert device is not None
    assert device.status == "pending"
    assert device.last_seen_at is not None
    # Releasing is for quarantined devices; approval is its own, conditional, change.
    assert not store.set_device_status(device_id, "active", reason="x", only_from="quarantined")
    assert store.set_device_status(
        device_id, "active", reason="checked", only_from="pending", action="approve"
    )
    device = store.get_device(device_id)
    assert device is not None
    assert device.status == "active"
    enrolled, approved = store.audit_log(device_id)
    assert enrolled.evidence == EnrollmentEvidence(profile="unknown", approved=False)
    assert (approved.action, approved.reason) == ("approve", "checked")


def test_every_write_extends_one_chain_that_verifies(store: Store) -> None:
    token, _ = create_token(store, uses=3)
    devices = [_enroll(store, token) for _ in range(3)]
    store.set_device_status(devices[0], "quarantined", reason="suspicious", actor="hub")
    store.set_device_status(devices[0], "active", reason="fine", only_from="quarantined")
    store.add_audit_event(
        device_id=None, action="note", actor="operator", reason="x", evidence=OperatorEvidence()
    )
    events = store.audit_log()
    assert len(events) == 6
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(events))
    verdict = store.verify_audit_chain()
    assert verdict.ok
    assert (verdict.entries, verdict.last_hash) == (6, events[-1].entry_hash)
    page = store.audit_log(after_id=events[1].id, limit=2)
    assert [e.id for e in page] == [events[2].id, events[3].id]


def test_concurrent_writers_never_fork_the_chain(store: Store) -> None:
    def write(n: int) -> None:
        for i in range(8):
            store.add_audit_event(
                device_id=None,
                action="note",
                actor="operator",
                reason=f"writer {n} entry {i}",
                evidence=OperatorEvidence(),
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(4)))
    verdict = store.verify_audit_chain()
    assert verdict.ok
    assert verdict.entries == 32


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_events SET reason = 'x'", "DELETE FROM audit_events"]
)
def test_the_database_refuses_to_change_or_remove_entries(store: Store, statement: str) -> None:
    store.add_audit_event(
        device_id=None, action="note", actor="operator", reason="kept", evidence=OperatorEvidence()
    )
    with pytest.raises(DatabaseError, match="append-only"), store.engine.begin() as conn:
        conn.execute(text(statement))
    assert [e.reason for e in store.audit_log()] == ["kept"]


def _drop_guards(store: Store) -> None:
    """What someone with raw access to the database could do first."""
    with store.engine.begin() as conn:
        if store.is_local:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(text("DROP TRIGGER audit_events_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_append_only ON audit_events"))


def _three_entries(store: Store) -> list[int]:
    for reason in ("one", "two", "three"):
        store.add_audit_event(
            device_id=None,
            action="note",
            actor="operator",
            reason=reason,
            evidence=OperatorEvidence(),
        )
    return [e.id for e in store.audit_log()]


def test_verify_names_an_entry_changed_in_place(store: Store) -> None:
    ids = _three_entries(store)
    _drop_guards(store)
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET reason = 'forged' WHERE id = :id"), {"id": ids[1]}
        )
    verdict = store.verify_audit_chain()
    assert verdict.first_broken is not None
    assert verdict.first_broken.entry_id == ids[1]
    assert "contents" in verdict.first_broken.reason


def test_verify_names_the_entry_after_one_removed(store: Store) -> None:
    ids = _three_entries(store)
    _drop_guards(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": ids[1]})
    verdict = store.verify_audit_chain()
    assert verdict.first_broken is not None
    assert verdict.first_broken.entry_id == ids[2]
    assert "follow" in verdict.first_broken.reason


# -- the pure chain ----------------------------------------------------------------------------

_START = datetime(2026, 1, 1, tzinfo=UTC)


def _chain(reasons: list[str]) -> list[ChainEntry]:
    entries, prev = [], GENESIS
    for i, reason in enumerate(reasons):
        at = _START + timedelta(microseconds=i * 1_000_003)
        fields = {
            "at": at,
            "device_id": None,
            "action": "note",
            "actor": "operator",
            "reason": reason,
            "evidence_json": '{"kind":"operator"}',
        }
        digest = entry_hash(prev_hash=prev, **fields)  # type: ignore[arg-type]
        entries.append(ChainEntry(id=i + 1, prev_hash=prev, entry_hash=digest, **fields))  # type: ignore[arg-type]
        prev = digest
    return entries


@given(
    reasons=st.lists(st.text(max_size=20), min_size=1, max_size=12),
    data=st.data(),
)
def test_any_single_change_is_named_at_its_entry(reasons: list[str], data: st.DataObject) -> None:
    entries = _chain(reasons)
    assert verify_chain(entries).ok
    k = data.draw(st.integers(0, len(entries) - 1))
    field = data.draw(st.sampled_from(["at", "reason", "action", "evidence_json", "device_id"]))
    original = entries[k]
    changed = {
        "at": original.at + timedelta(microseconds=1),
        "reason": original.reason + "!",
        "action": "revoke",
        "evidence_json": '{"kind":"legacy","raw":""}',
        "device_id": uuid.UUID(int=k + 1),
    }[field]
    entries[k] = dataclasses.replace(original, **{field: changed})
    verdict = verify_chain(entries)
    assert verdict.first_broken is not None
    assert verdict.first_broken.entry_id == original.id


def test_naive_and_aware_utc_times_hash_alike() -> None:
    """SQLite hands back naive datetimes: they are UTC."""
    aware = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    common = {"prev_hash": GENESIS, "device_id": None, "action": "a", "actor": "b", "reason": ""}
    assert entry_hash(at=aware, evidence_json="{}", **common) == entry_hash(  # type: ignore[arg-type]
        at=aware.replace(tzinfo=None),
        evidence_json="{}",
        **common,  # type: ignore[arg-type]
    )
