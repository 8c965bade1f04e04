"""Hub replicas sharing one database: the signed replica list, and state that holds across them.

The pure parts (the list's encoding and signature, which rows it lists) are tested directly;
then two real hub processes on one real database (SQLite always, PostgreSQL when
ESCALADE_TEST_POSTGRES_URL is set) show what scale-out promises: each lists the other, one
nonce is accepted once across both, a quarantine made through one is refused by the other, and
a replica killed without signing off drops out of the list.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from enrollment import enroll_request

from attestation import AttestationBundle
from cloud_hub.escalation.reputation_book import ReputationBook
from cloud_hub.poisoning import Reputation, ReputationParams
from cloud_hub.replicas import live_entries
from cloud_hub.store import Store
from cloud_hub.store.replicas import ReplicaRow, ReplicaTable
from escalade.demo import infer
from escalade.procs import agent_command, module_command, run_step, service
from escalade_protocol import envelope
from escalade_protocol.artifacts import load_manifest, verified_path
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import (
    Ed25519PrivateKey,
    load_ed25519_public,
    load_x25519_public,
    public_bytes,
)
from escalade_protocol.messages import EnrollResponse, ErrorBody, InferResponse
from escalade_protocol.replica_list import (
    ReplicaEntry,
    ReplicaList,
    verify_replica_list,
)
from escalade_protocol.tensor import Tensor

KEY_A, KEY_B = bytes(range(16)), bytes(range(16, 32))


# --- the signed list ---------------------------------------------------------------------------


def _listing(nonce: bytes = bytes(32)) -> ReplicaList:
    return ReplicaList(
        issuer_key_id=KEY_A,
        nonce=nonce,
        issued_at_ms=1_700_000_000_000,
        replicas=(
            ReplicaEntry("http://10.0.0.1:8443", KEY_A, "sgx-gramine"),
            ReplicaEntry("http://10.0.0.2:8443", KEY_B, "sgx-gramine"),
        ),
    )


def test_replica_list_round_trips_under_its_signature() -> None:
    key = Ed25519PrivateKey.generate()
    signed = _listing().sign(key)
    got = verify_replica_list(signed, key.public_key(), issuer_key_id=KEY_A, nonce=bytes(32))
    assert got == _listing()
    assert _listing().sign(key) == signed  # one canonical encoding


def test_every_changed_byte_of_a_replica_list_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    signed = _listing().sign(key)
    for i in range(len(signed)):
        tampered = bytearray(signed)
        tampered[i] ^= 0x01
        with pytest.raises(ProtocolError):
            verify_replica_list(
                bytes(tampered), key.public_key(), issuer_key_id=KEY_A, nonce=bytes(32)
            )


def test_a_replica_list_for_another_nonce_or_issuer_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    signed = _listing().sign(key)
    with pytest.raises(ProtocolError) as stale:
        verify_replica_list(signed, key.public_key(), issuer_key_id=KEY_A, nonce=b"\x01" * 32)
    assert stale.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(ProtocolError) as other:
        verify_replica_list(signed, key.public_key(), issuer_key_id=KEY_B, nonce=bytes(32))
    assert other.value.code is ErrorCode.UNKNOWN_HUB_KEY
    forger = Ed25519PrivateKey.generate()
    with pytest.raises(ProtocolError) as forged:
        verify_replica_list(signed, forger.public_key(), issuer_key_id=KEY_A, nonce=bytes(32))
    assert forged.value.code is ErrorCode.BAD_SIGNATURE


def _row(url: str, key: bytes, beat: datetime) -> ReplicaRow:
    return ReplicaRow(uuid.uuid4(), url, key, "simulated", beat - timedelta(minutes=1), beat)


def test_the_list_puts_the_asking_replica_first_and_names_each_url_once() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    me = ReplicaEntry("http://a:1", b"\xaa" * 16, "simulated")
    rows = [
        _row("http://a:1", b"\x01" * 16, now),  # our own row, before our key changed
        _row("http://b:1", b"\x02" * 16, now - timedelta(seconds=5)),  # b before its restart
        _row("http://b:1", b"\x03" * 16, now),
    ]
    entries = live_entries(rows, me)
    assert entries[0] == me
    assert [e.url for e in entries] == ["http://a:1", "http://b:1"]
    assert entries[1].key_id == b"\x03" * 16  # the latest registration of b


def test_replica_table_lists_live_replicas_until_they_sign_off_or_go_quiet(store: Store) -> None:
    table = ReplicaTable(store.engine)
    now = datetime.now(UTC)
    a, b = _row("http://a:1", KEY_A, now), _row("http://b:1", KEY_B, now - timedelta(seconds=30))
    table.heartbeat(a)
    table.heartbeat(b)
    live = table.live(now - timedelta(seconds=10))
    assert [r.url for r in live] == ["http://a:1"]  # b's heartbeat is too old
    table.heartbeat(ReplicaRow(b.replica_id, b.url, KEY_B, "simulated", b.started_at, now))
    assert {r.url for r in table.live(now - timedelta(seconds=10))} == {"http://a:1", "http://b:1"}
    table.sign_off(a.replica_id, now)
    assert [r.url for r in table.live(now - timedelta(seconds=10))] == ["http://b:1"]
    # A restarted replica under the same id heartbeats back into the list.
    table.heartbeat(ReplicaRow(a.replica_id, a.url, KEY_B, "simulated", a.started_at, now))
    back = {r.url: r for r in table.live(now - timedelta(seconds=10))}
    assert back["http://a:1"].key_id == KEY_B


def _enrolled(store: Store) -> uuid.UUID:
    store.add_token("t" * 64, ttl=timedelta(hours=1))
    key = Ed25519PrivateKey.generate().public_key()
    return store.enroll(token_hash="t" * 64, public_key=public_bytes(key), profile="x86-64-cpu")


def test_replicas_build_one_cusum_for_a_device_whose_traffic_they_split(store: Store) -> None:
    """Two hubs' reputation books on one database: each merges its movement and reads back
    the other's, so the device's suspicion adds up instead of being overwritten."""
    device_id = _enrolled(store)
    params = ReputationParams()
    books = ReputationBook(params), ReputationBook(params)

    def flush(book: ReputationBook) -> None:
        pending = book.drain()
        book.merged(pending, store.save_reputations(pending, ceiling=params.ceiling))

    for step, book in enumerate([*books, *books], start=1):
        device = store.get_device(device_id)
        assert device is not None
        before = book.current(device) or Reputation(cusum=device.cusum)
        book.remember(device, replace(before, cusum=before.cusum + 1.0), persist=True)
        flush(book)
        # Every +1, whichever replica saw it, is in the database...
        assert store.get_device(device_id).cusum == pytest.approx(step)  # type: ignore[union-attr]
    # ...and in each replica's view after its next flush.
    assert books[1].current(device).cusum == pytest.approx(4.0)  # type: ignore[union-attr]
    books[0].remember(device, books[0].current(device), persist=True)  # type: ignore[arg-type]
    flush(books[0])
    assert books[0].current(device).cusum == pytest.approx(4.0)  # type: ignore[union-attr]


def test_a_failed_reputation_write_is_merged_at_the_next_flush(store: Store) -> None:
    device_id = _enrolled(store)
    device = store.get_device(device_id)
    assert device is not None
    book = ReputationBook()
    book.remember(device, Reputation(cusum=2.5), persist=True)
    book.restore(book.drain())  # the write failed
    pending = book.drain()
    assert [p.delta for p in pending] == [2.5]
    book.merged(pending, store.save_reputations(pending, ceiling=book.params.ceiling))
    assert store.get_device(device_id).cusum == pytest.approx(2.5)  # type: ignore[union-attr]


# --- two real replicas on one database -----------------------------------------------------------


class Replica:
    """One hub replica as a device sees it: attested keys, sealing, the signed list."""

    def __init__(self, url: str, bundle: AttestationBundle) -> None:
        self.url = url
        self.bundle = bundle
        self.signing_key = load_ed25519_public(bundle.signing_key)
        self.encryption_key = load_x25519_public(bundle.encryption_key)

    @classmethod
    async def attest(cls, http: aiohttp.ClientSession, url: str) -> Replica:
        nonce = os.urandom(32).hex()
        async with http.post(url + "/v1/attestation", data=f'{{"nonce": "{nonce}"}}') as r:
            assert r.status == 200, await r.text()
            return cls(url, AttestationBundle.model_validate_json(await r.read()))

    async def replica_urls(self, http: aiohttp.ClientSession) -> list[str]:
        nonce = os.urandom(32)
        async with http.post(self.url + "/v1/replicas", data=f'{{"nonce": "{nonce.hex()}"}}') as r:
            assert r.status == 200, await r.text()
            raw = await r.read()
        listing = verify_replica_list(
            raw, self.signing_key, issuer_key_id=self.bundle.hub_key_id, nonce=nonce
        )
        return [entry.url for entry in listing.replicas]


async def _until(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if await predicate():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def _hub(hub_dir: Path, bundle_dir: Path, database_url: str) -> list[str]:
    return module_command(
        "cloud_hub.cli",
        "serve",
        "--data-dir",
        str(hub_dir),
        "--database-url",
        database_url,
        "--models",
        str(bundle_dir),
        "--port",
        "0",
        "--ready",
        "--allow-simulated-tee",
        "--replica-heartbeat-s",
        "0.2",
    )


async def _post(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, bytes]:
    async with http.post(url + "/v1/escalate", data=body) as response:
        return response.status, await response.read()


def _code(raw: bytes) -> ErrorCode:
    return ErrorBody.model_validate_json(raw).code


async def test_two_replicas_share_the_list_the_replay_check_and_quarantine(
    database_url: str, bundle_dir: Path, tmp_path: Path, clean_embedding: npt.NDArray[np.float32]
) -> None:
    Store.open(database_url, migrate=True).close()
    manifest = load_manifest(bundle_dir)
    cmd_a = _hub(tmp_path / "a", bundle_dir, database_url)
    cmd_b = _hub(tmp_path / "b", bundle_dir, database_url)
    async with (
        service("hub-a", cmd_a, log_dir=tmp_path) as hub_a,
        service("hub-b", cmd_b, log_dir=tmp_path) as hub_b,
        aiohttp.ClientSession() as http,
    ):
        a, b = await Replica.attest(http, hub_a.url), await Replica.attest(http, hub_b.url)
        assert a.bundle.hub_key_id != b.bundle.hub_key_id  # each its own identity

        async def both_listed() -> bool:
            urls = {hub_a.url, hub_b.url}
            return set(await a.replica_urls(http)) == urls == set(await b.replica_urls(http))

        await _until(both_listed)

        token = await run_step(
            module_command(
                "cloud_hub.cli", "tokens", "create", "--database-url", database_url, "--quiet"
            ),
            what="token",
        )
        key = Ed25519PrivateKey.generate()
        async with http.post(
            hub_a.url + "/v1/enroll", data=enroll_request(token.strip(), key).model_dump_json()
        ) as response:
            device_id = EnrollResponse.model_validate_json(await response.read()).device_id

        def sealed(to: Replica, nonce: bytes, seq: int) -> bytes:
            header = envelope.EnvelopeHeader(
                device_id=device_id,
                model_id=manifest.model_id,
                model_version=manifest.model_version,
                seq=seq,
                timestamp_ms=int(time.time() * 1000),
                nonce=nonce,
                hub_key_id=to.bundle.hub_key_id,
            )
            payload = Tensor.from_numpy(clean_embedding, manifest.wire_dtype)
            return envelope.seal(header, payload, device_key=key, hub_key=to.encryption_key)

        # One envelope nonce offered to both replicas at once, many times over: each time
        # exactly one replica accepts it and the other says it was replayed.
        for seq in range(1, 21):
            nonce = os.urandom(16)
            results = await asyncio.gather(
                _post(http, a.url, sealed(a, nonce, seq)), _post(http, b.url, sealed(b, nonce, seq))
            )
            statuses = sorted(status for status, _ in results)
            assert statuses == [200, 409], results
            refused = next(raw for status, raw in results if status != 200)
            assert _code(refused) is ErrorCode.REPLAYED_NONCE

        # Quarantined through replica A's admin API; replica B refuses the very next message.
        admin_token = (
            await run_step(
                module_command(
                    "cloud_hub.cli", "create-admin-token", "--database-url", database_url
                ),
                what="admin token",
            )
        ).splitlines()[-1]
        async with http.post(
            f"{a.url}/admin/v1/devices/{device_id}/quarantine",
            json={"reason": "test"},
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as response:
            assert response.status == 200, await response.text()
        status, raw = await _post(http, b.url, sealed(b, os.urandom(16), 100))
        assert (status, _code(raw)) == (403, ErrorCode.DEVICE_QUARANTINED)

        # Replica B dies without signing off: A stops listing it once its heartbeat is stale.
        assert hub_b.process.pid is not None
        os.kill(hub_b.process.pid, signal.SIGKILL)

        async def only_a_listed() -> bool:
            return await a.replica_urls(http) == [hub_a.url]

        await _until(only_a_listed)

    # The escalations' sightings were written when replica A shut down cleanly.
    store = Store.open(database_url)
    try:
        device = store.get_device(device_id)
    finally:
        store.close()
    assert device is not None
    assert device.last_seen_at is not None
    assert device.last_seen_at > device.enrolled_at


# --- a real agent across two replicas -----------------------------------------------------------


def _answered(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('escalade_hub_escalations_total{outcome="answered"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _hub_answered(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(url + "/metrics") as response:
        return _answered(await response.text())


@pytest.mark.timeout(240)
async def test_an_agent_spreads_over_the_listed_replicas_and_survives_losing_one(
    database_url: str, bundle_dir: Path, tmp_path: Path
) -> None:
    Store.open(database_url, migrate=True).close()
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        inputs = np.asarray(data["X"][:96], dtype=np.float32)
    agent_dir = tmp_path / "agent"
    config = tmp_path / "agent.toml"
    config.write_text("replica_refresh_s = 0.3\nadvertise = false\n")
    cmd_a = _hub(tmp_path / "a", bundle_dir, database_url)
    cmd_b = _hub(tmp_path / "b", bundle_dir, database_url)
    async with (
        service("hub-a", cmd_a, log_dir=tmp_path) as hub_a,
        service("hub-b", cmd_b, log_dir=tmp_path) as hub_b,
        aiohttp.ClientSession() as http,
    ):
        token = await run_step(
            module_command(
                "cloud_hub.cli", "tokens", "create", "--database-url", database_url, "--quiet"
            ),
            what="token",
        )
        await run_step(
            module_command(
                "edge_agent.cli", "enroll", "--hub", hub_a.url, f"--token={token.strip()}",
                "--data-dir", str(agent_dir),
            ),
            what="enrolling the agent",
        )  # fmt: skip
        agent_argv = agent_command(
            agent_dir, bundle_dir, "--allow-simulated-tee", "--config", str(config)
        )
        async with service("agent", agent_argv, log_dir=tmp_path) as agent:

            async def burst(xs: np.ndarray) -> list[InferResponse]:
                outcomes = await asyncio.gather(*(infer(http, agent.url, x, "hub") for x in xs))
                return [o.response for o in outcomes]

            # The agent knows only replica A; it learns B from A's signed list, attests it,
            # and from then on balances over both.
            async def b_in_use() -> bool:
                await burst(inputs[:8])
                return await _hub_answered(http, hub_b.url) > 0

            await _until(b_in_use, timeout_s=30)
            before = await _hub_answered(http, hub_a.url), await _hub_answered(http, hub_b.url)
            spread = [r for i in range(0, 48, 8) for r in await burst(inputs[i : i + 8])]
            after = await _hub_answered(http, hub_a.url), await _hub_answered(http, hub_b.url)
            assert all(r.source == "hub" for r in spread), [r.reason for r in spread]
            assert after[0] > before[0], (before, after)  # both replicas took a share
            assert after[1] > before[1], (before, after)

            # Replica A dies mid-run: every request is still answered by the hub (B).
            assert hub_a.process.pid is not None
            os.kill(hub_a.process.pid, signal.SIGKILL)
            survived = [r for i in range(48, 96, 8) for r in await burst(inputs[i : i + 8])]
            assert all(r.source == "hub" for r in survived), [
                (r.reason, r.hub_error) for r in survived if r.source != "hub"
            ]
            assert await _hub_answered(http, hub_b.url) >= after[1] + len(survived)
