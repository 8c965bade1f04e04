"""Audits by re-encoding: input commitments, sealed reveals, the hub's verdict and its proof.

Pure parts first (the commitment, the sampler, the verdict, the stores with injected clocks),
then the tolerance the hub allows, measured on a real bundle, then real processes: an honest
agent passes every audit, and an agent whose encoder was tampered with so that its embeddings
stay genuine-looking (the encoding of another input) is caught by its first audit and
quarantined with a proof an administrator can check with the device's public key alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hubdb import migrated_data_dir
from onnx import helper, numpy_helper

from cloud_hub.app import build_state
from cloud_hub.audit import AuditProofEvidence
from cloud_hub.audits import AuditDesk, AuditOutcome, AuditPolicy, AuditSampler, judge_reveal
from cloud_hub.audits.verdict import relative_distance
from cloud_hub.config import HubConfig
from cloud_hub.store import Store, sqlite_url
from cloud_hub.store.policies import HubPolicy, save_policy
from edge_agent.audit_store import AUDIT_KEY_FILE, AUDIT_STORE_FILE, AuditStore
from escalade.audit_bench import run_audit_bench
from escalade.demo import infer
from escalade.poisoning_bench.audit_sim import Crafter, Judge
from escalade.poisoning_bench.models import BundleModels
from escalade.procs import (
    agent_command,
    enroll_agent,
    hub_command,
    migrate_hub,
    module_command,
    service,
)
from escalade_protocol import envelope
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    ArtifactFile,
    load_manifest,
    sha256_file,
    verified_path,
    write_manifest,
)
from escalade_protocol.errors import ProtocolError
from escalade_protocol.keys import X25519PrivateKey, load_ed25519_public
from escalade_protocol.provenance import Revealed, commit, open_reveal, seal_reveal
from escalade_protocol.tensor import Tensor

DIGEST = bytes(range(32))


def _revealed(values: list[float]) -> Revealed:
    return Revealed(salt=os.urandom(32), input=Tensor.from_numpy(np.array(values, np.float32)))


# --- commitments and reveals ------------------------------------------------------------------


def test_a_commitment_binds_salt_input_and_embedding() -> None:
    salt, x, e = os.urandom(32), b"input", b"embedding"
    c = commit(salt, x, e)
    assert c == commit(salt, x, e)
    assert {c, commit(os.urandom(32), x, e), commit(salt, b"inpuT", e), commit(salt, x, b"e")}
    assert len({c, commit(salt, x + b"e", b"mbedding")}) == 2  # length-prefixed: no sliding


def test_a_reveal_opens_only_inside_the_hub_and_only_for_its_request() -> None:
    hub = X25519PrivateKey.generate()
    revealed = _revealed([1.0, 2.0, 3.0])
    sealed = seal_reveal(revealed, hub.public_key(), request_digest=DIGEST)
    assert open_reveal(sealed, hub, request_digest=DIGEST) == revealed
    with pytest.raises(ProtocolError):
        open_reveal(sealed, hub, request_digest=bytes(32))  # moved to another request
    with pytest.raises(ProtocolError):
        open_reveal(sealed, X25519PrivateKey.generate(), request_digest=DIGEST)


def test_the_sampler_audits_its_rate_and_devices_cannot_predict_which() -> None:
    digests = [os.urandom(32) for _ in range(20_000)]
    sampler = AuditSampler()
    share = sum(sampler.selected(d, 0.05) for d in digests) / len(digests)
    assert 0.04 < share < 0.06
    assert not any(sampler.selected(d, 0.0) for d in digests[:1000])
    # Two keys pick different requests: without the enclave's key, a guess is a coin flip.
    other = AuditSampler()
    both = sum(sampler.selected(d, 0.5) == other.selected(d, 0.5) for d in digests)
    assert 0.47 < both / len(digests) < 0.53


def test_the_verdict_names_what_failed() -> None:
    sent = np.array([1.0, 0.0], np.float32)
    same = {"committed": b"c" * 32, "recomputed": b"c" * 32, "sent": sent, "tolerance": 0.01}
    assert judge_reveal(**same, reencoded=sent * 1.001).passed  # type: ignore[arg-type]
    moved = judge_reveal(**same, reencoded=np.array([0.0, 1.0], np.float32))  # type: ignore[arg-type]
    assert moved.outcome is AuditOutcome.ENCODING_MISMATCH
    assert moved.distance == pytest.approx(2**0.5)
    lied = judge_reveal(
        committed=b"c" * 32, recomputed=b"d" * 32, sent=sent, reencoded=sent, tolerance=0.01
    )
    assert lied.outcome is AuditOutcome.COMMITMENT_MISMATCH
    nan = judge_reveal(**same, reencoded=np.array([np.nan, 0], np.float32))  # type: ignore[arg-type]
    assert nan.outcome is AuditOutcome.ENCODING_MISMATCH
    assert judge_reveal(**same, reencoded=None).outcome is AuditOutcome.BAD_INPUT  # type: ignore[arg-type]


def test_pending_audits_wait_for_their_own_device_until_the_deadline() -> None:
    now = [0.0]
    desk = AuditDesk(AuditPolicy(rate=1.0, deadline_s=10.0), clock=lambda: now[0])
    device, other = uuid.uuid4(), uuid.uuid4()

    def consider(digest: bytes) -> bool:
        return desk.consider(
            device_id=device, generation=0, request_digest=digest, commitment=bytes(32),
            embedding=np.zeros(2, np.float32), envelope=b"", model_version=1,
        )  # fmt: skip

    assert consider(b"a" * 32)
    now[0] = 5.0
    assert consider(b"b" * 32)
    assert desk.take(other, b"a" * 32) is None  # another device cannot answer it
    assert desk.pending == 2
    now[0] = 10.0
    assert [p.request_digest for p in desk.expired()] == [b"a" * 32]
    taken = desk.take(device, b"b" * 32)
    assert taken is not None
    assert desk.take(device, b"b" * 32) is None  # judged once
    assert desk.pending == 0


def test_the_agent_keeps_inputs_encrypted_for_the_window_only(tmp_path: Path) -> None:
    now = [1000.0]
    store = AuditStore(tmp_path, window_s=600, max_entries=3, clock=lambda: now[0])
    revealed = _revealed([0.25, 0.5])
    store.put(DIGEST, revealed)
    assert store.get(DIGEST) == revealed
    for name in (AUDIT_STORE_FILE, AUDIT_KEY_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    raw = (tmp_path / AUDIT_STORE_FILE).read_bytes()
    assert revealed.salt not in raw  # encrypted at rest
    for i in range(4):  # bounded: the oldest go first
        store.put(bytes([i]) * 32, revealed)
    assert store.counts().held == 3
    assert store.get(DIGEST) is None
    now[0] += 601
    assert store.get(bytes([3]) * 32) is None  # past the window
    assert store.purge() == 3
    store.close()


# --- the tolerance, measured --------------------------------------------------------------------


def _encoder(
    bundle_dir: Path, level: ort.GraphOptimizationLevel, threads: int
) -> ort.InferenceSession:
    manifest = load_manifest(bundle_dir)
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        str(verified_path(bundle_dir, manifest.encoder)),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )


def test_honest_variance_is_far_inside_the_tolerance(bundle_dir: Path) -> None:
    """float16 on the wire and a different execution setting move an honest embedding by a
    small fraction of the hub's tolerance (the figures docs/provenance.md quotes)."""
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        inputs = np.asarray(data["X"], dtype=np.float32)
    hub = _encoder(bundle_dir, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, 1)
    device = _encoder(bundle_dir, ort.GraphOptimizationLevel.ORT_DISABLE_ALL, 2)
    (reference,) = hub.run([EMBEDDING], {ENCODER_INPUT: inputs})
    (other,) = device.run([EMBEDDING], {ENCODER_INPUT: inputs})
    wire = other.astype(np.float16).astype(np.float32)
    worst = max(relative_distance(w, r) for w, r in zip(wire, reference, strict=True))
    assert worst < AuditPolicy().tolerance / 5, worst


# --- real processes ----------------------------------------------------------------------------


def mirrored_bundle(bundle_dir: Path, out: Path) -> Path:
    """A copy whose encoder encodes the input mirrored left to right: each embedding is the
    genuine encoding of *another* input (a plausible one), so no statistic flags it."""
    shutil.copytree(bundle_dir, out)
    path = out / "encoder.onnx"
    model = onnx.load(path)
    side = round(load_manifest(out).input_dim ** 0.5)
    mirror = np.array([r * side + (side - 1 - c) for r in range(side) for c in range(side)])
    for node in model.graph.node:
        node.input[:] = ["mirrored" if i == ENCODER_INPUT else i for i in node.input]
    model.graph.initializer.append(numpy_helper.from_array(mirror.astype(np.int64), "mirror"))
    model.graph.node.insert(
        0, helper.make_node("Gather", [ENCODER_INPUT, "mirror"], ["mirrored"], axis=1)
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)
    manifest = load_manifest(out)
    encoder = ArtifactFile(path=manifest.encoder.path, sha256=sha256_file(path))
    write_manifest(out, manifest.model_copy(update={"encoder": encoder}))
    return out


def _devices(hub_dir: Path) -> dict[str, dict[str, object]]:
    listed = subprocess.run(
        module_command("cloud_hub.cli", "devices", "list", "--data-dir", str(hub_dir), "--json"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {str(row["device_id"]): row for row in json.loads(listed.stdout)}


@pytest.mark.timeout(180)
async def test_an_audit_catches_an_encoder_no_statistic_flags(
    bundle_dir: Path, tmp_path: Path
) -> None:
    evil_bundle = mirrored_bundle(bundle_dir, tmp_path / "mirrored")
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        inputs = np.asarray(data["X"][:30], dtype=np.float32)
    hub_dir = tmp_path / "hub"
    await migrate_hub(hub_dir)
    hub_argv = hub_command(hub_dir, bundle_dir, "--allow-simulated-tee", "--audit-rate", "1")
    async with service("hub", hub_argv, log_dir=tmp_path) as hub:
        honest_dir, evil_dir = tmp_path / "honest", tmp_path / "evil"
        for agent_dir in (honest_dir, evil_dir):
            await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
        unchecked = tmp_path / "unchecked.toml"
        unchecked.write_text("check_embedding_bands = false\n")

        def agent(data_dir: Path, models: Path) -> list[str]:
            return agent_command(
                data_dir, models, "--allow-simulated-tee", "--config", str(unchecked)
            )

        async with (
            service("honest", agent(honest_dir, bundle_dir), log_dir=tmp_path) as honest,
            aiohttp.ClientSession() as http,
        ):
            served = [(await infer(http, honest.url, x, "hub")).response for x in inputs]
            # Reveals go out behind the answers: wait for the hub to have judged all 30.
            for _ in range(100):
                async with http.get(hub.url + "/metrics") as response:
                    metrics = await response.text()
                if 'escalade_hub_audits_total{outcome="passed"} 30.0' in metrics:
                    break
                await asyncio.sleep(0.05)
            async with http.get(honest.url + "/v1/health") as response:
                health = await response.json()
        # The device knows the policy it runs under (from the attested bundle) and its audits.
        assert health["audit_rate"] == 1.0
        assert (health["audits"], health["audits_revealed"], health["audits_failed"]) == (30, 30, 0)
        assert all(r.source == "hub" for r in served), [
            (r.reason, r.hub_error) for r in served if r.source != "hub"
        ]
        audited = [line for line in metrics.splitlines() if "audits_total{" in line]
        assert audited == ['escalade_hub_audits_total{outcome="passed"} 30.0'], audited

        async with (
            service("evil", agent(evil_dir, evil_bundle), log_dir=tmp_path) as evil,
            aiohttp.ClientSession() as http,
        ):
            answers = []
            for x in inputs:
                answers.append((await infer(http, evil.url, x, "hub")).response)
                if answers[-1].hub_error is not None and answers[-1].hub_error.value == (
                    "device_quarantined"
                ):
                    break
    refusals = [a.hub_error.value for a in answers if a.hub_error is not None]
    assert refusals[-1:] == ["device_quarantined"], [a.reason for a in answers]
    # Its first answers were served: no per-message check refused the mirrored embeddings.
    assert answers[0].source == "hub"

    rows = _devices(hub_dir)
    evil_id = uuid.UUID(json.loads((evil_dir / "device.json").read_text())["device_id"])
    assert rows[str(evil_id)]["status"] == "quarantined"
    assert all(r["status"] == "active" for k, r in rows.items() if k != str(evil_id))

    store = Store.open(sqlite_url(hub_dir))
    try:
        (entry,) = [e for e in store.audit_log(evil_id) if e.action == "quarantine"]
        device = store.get_device(evil_id)
    finally:
        store.close()
    proof = entry.evidence
    assert isinstance(proof, AuditProofEvidence)
    assert proof.outcome == "encoding_mismatch"
    assert proof.distance is not None
    assert proof.distance > 10 * proof.tolerance
    # The proof holds with the device's public key alone: it signed the commitment.
    sealed = envelope.parse(bytes.fromhex(proof.envelope))
    assert device is not None
    sealed.verify_signature(load_ed25519_public(device.public_key))
    assert sealed.header.commitment.hex() == proof.commitment
    assert sealed.header.device_id == evil_id


# --- the benchmark -------------------------------------------------------------------------------


def test_a_crafted_preimage_of_a_linear_encoder_passes_the_audit(bundle_dir: Path) -> None:
    """The known limit, measured rather than assumed: for the PCA demo encoder a forged
    embedding near a clean one has a preimage inside the input domain, the crafter finds it,
    and the hub's own re-encoding accepts it; the input it reveals is not the real one."""
    models = BundleModels(bundle_dir)
    judge = Judge(bundle_dir, models.manifest.wire_dtype, AuditPolicy().tolerance)
    crafter = Crafter(judge, bundle_dir)
    x = models.x_test[:20]
    clean = models.embed(x)
    rng = np.random.default_rng(0)
    forged = (clean + 0.2 * rng.standard_normal(clean.shape)).astype(np.float32)
    passed = 0
    for i in range(len(x)):
        crafted = crafter.craft(forged[i], x[i])
        assert crafter.low <= crafted.min()
        assert crafted.max() <= crafter.high
        passed += judge.passes(forged[i], crafted)[0]
        # The true input does not pass for the forged embedding.
        assert not judge.passes(forged[i], x[i])[0]
    assert passed >= 18


def test_the_audit_bench_reports_what_the_hub_would_decide(bundle_dir: Path) -> None:
    report = run_audit_bench(bundle_dir, devices=8, messages=300, honest_devices=8)
    by_key = {(r.attack, r.strategy, r.audit_rate): r for r in report.attacks}
    assert len(by_key) == 3 * 3 * 4
    # Revealing the true input is caught once audited; at 5% over 300 messages, surely.
    assert by_key["gradient", "honest_input", 0.05].quarantined_share == 1.0
    # Refusing costs the deadline on top of the first audit.
    honest = by_key["gradient", "honest_input", 0.05].messages_to_quarantine
    refused = by_key["gradient", "refuse", 0.05].messages_to_quarantine
    assert honest is not None
    assert refused is not None
    assert refused > honest
    for row in report.attacks:
        assert (row.reveal_passes is None) == (row.strategy != "crafted_input")
    assert all(h.false_quarantines == 0 for h in report.honest)
    assert all(h.worst_distance < report.tolerance for h in report.honest)
    assert report.audit_cost_us > 0


async def test_the_fleet_policy_turns_audits_on_across_the_hub(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """An administrator's stored policy (admin API) reaches the running service: audit rate,
    replay window, refusal band — and the attested bundle tells devices the new rate."""
    state = build_state(
        HubConfig(
            data_dir=migrated_data_dir(tmp_path), models_dir=bundle_dir, allow_simulated_tee=True
        )
    )
    service = state.service
    try:
        assert not await service.reload_policy()  # nothing stored: the configured defaults
        assert service.model_info.audit_rate == 0.0
        save_policy(
            service.store.engine,
            HubPolicy(audit_rate=0.25, timestamp_window_ms=5_000, reject_score=1.5),
        )
        assert await service.reload_policy()
        assert service.model_info.audit_rate == 0.25
        assert service.auditor.policy.rate == 0.25
        assert service.pipeline.policy.timestamp_window_ms == 5_000
        assert service.pipeline.policy.reject_score == 1.5
        assert not await service.reload_policy()  # same revision: nothing to do
    finally:
        await service.close()
