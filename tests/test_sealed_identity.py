"""Sealed hub keys and post-quantum sealing with real processes.

The hub seals its keys to the enclave's MRENCLAVE sealing key (Gramine's
``/dev/attestation/keys/_sgx_mrenclave``, here a file in the FIFO-backed FAKE attestation dir,
serving SYNTHETIC quotes from a test PKI): restarted with the same sealing key it comes back
with the same identity; with another measurement's key it cannot unseal and starts afresh.
Real agents pick the hybrid ML-KEM-768 + X25519 suite, and one that requires it refuses a hub
offering only X25519.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from dcap_synth import SyntheticPki
from fake_gramine import FakeAttestationDir

from attestation import AttestationBundle
from cloud_hub.identity import HubIdentity
from cloud_hub.sealing import SEALED_IDENTITY_NAME, Unsealed, seal, sealed_identity, unseal
from escalade.demo import infer
from escalade.procs import agent_command, enroll_agent, hub_command, migrate_hub, service
from escalade_protocol.artifacts import load_manifest, verified_path
from escalade_protocol.envelope import HpkeSuiteId

MRENCLAVE = b"\xe1" * 32
BOTH = frozenset(HpkeSuiteId)


def test_sealed_keys_open_only_with_the_same_sealing_key() -> None:
    key, other = os.urandom(16), os.urandom(16)
    blob = seal(key, b"secret keys")
    assert unseal(key, blob) == b"secret keys"
    assert unseal(other, blob) is None
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    assert unseal(key, bytes(flipped)) is None
    assert b"secret" not in blob


def test_the_identity_is_restored_only_under_the_same_measurement(tmp_path: Path) -> None:
    key = os.urandom(16)
    first, outcome = sealed_identity(tmp_path, key, BOTH)
    assert outcome is Unsealed.CREATED
    path = tmp_path / SEALED_IDENTITY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, outcome = sealed_identity(tmp_path, key, BOTH)
    assert outcome is Unsealed.RESTORED
    assert again.key_id == first.key_id
    assert again.to_bytes() == first.to_bytes()
    # Another enclave build: another sealing key, fresh keys, and the file now holds those.
    other, outcome = sealed_identity(tmp_path, os.urandom(16), BOTH)
    assert outcome is Unsealed.REPLACED
    assert other.key_id != first.key_id
    assert sealed_identity(tmp_path, key, BOTH)[1] is Unsealed.REPLACED


def test_dropping_the_hybrid_suite_keeps_the_classical_keys(tmp_path: Path) -> None:
    key = os.urandom(16)
    both, _ = sealed_identity(tmp_path, key, BOTH)
    classical, outcome = sealed_identity(tmp_path, key, {HpkeSuiteId.X25519})
    assert outcome is Unsealed.RESTORED
    assert classical.hybrid is None
    assert classical.encryption_public == both.encryption_public
    assert classical.key_id != both.key_id
    assert classical.private_for(HpkeSuiteId.MLKEM768_X25519) is None
    restored = HubIdentity.from_bytes(classical.to_bytes(), {HpkeSuiteId.X25519})
    assert restored.key_id == classical.key_id


async def attested_key_id(http: aiohttp.ClientSession, url: str) -> bytes:
    nonce = os.urandom(32).hex()
    async with http.post(url + "/v1/attestation", json={"nonce": nonce}) as response:
        assert response.status == 200
        bundle = AttestationBundle.model_validate_json(await response.read())
    assert [k.suite for k in bundle.additional_keys] == [HpkeSuiteId.MLKEM768_X25519]
    return bundle.hub_key_id


@pytest.mark.timeout(120)
async def test_a_restarted_enclave_keeps_its_keys_and_another_build_does_not(
    bundle_dir: Path, tmp_path: Path
) -> None:
    pki = SyntheticPki()
    collateral = tmp_path / "collateral.json"
    collateral.write_text(json.dumps(pki.collateral()))
    hub_dir = tmp_path / "hub"
    await migrate_hub(hub_dir)
    with FakeAttestationDir(
        tmp_path / "attestation",
        make_quote=lambda rd: pki.quote(report_data=rd, mr_enclave=MRENCLAVE),
        requests=10,
    ) as fake:
        sealing_key = fake.root / "keys" / "_sgx_mrenclave"
        sealing_key.parent.mkdir()
        sealing_key.write_bytes(os.urandom(16))
        argv = hub_command(
            hub_dir,
            bundle_dir,
            "--attestation-dir",
            str(fake.root),
            "--collateral",
            str(collateral),
            "--seal-keys",
        )

        async def key_id(name: str) -> bytes:
            async with (
                service(name, argv, log_dir=tmp_path) as hub,
                aiohttp.ClientSession() as http,
            ):
                return await attested_key_id(http, hub.url)

        first = await key_id("hub-1")
        assert await key_id("hub-2") == first
        sealing_key.write_bytes(os.urandom(16))  # another MRENCLAVE's sealing key
        assert await key_id("hub-3") != first
    assert b"BEGIN" not in (hub_dir / SEALED_IDENTITY_NAME).read_bytes()


def test_seal_keys_is_refused_without_an_sgx_enclave(bundle_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    subprocess.run(
        [sys.executable, "-m", "cloud_hub.cli", "migrate", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
    )
    argv = [sys.executable, "-m", "cloud_hub.cli", "serve", "--data-dir", str(data_dir)]
    argv += ["--models", str(bundle_dir), "--port", "0", "--allow-simulated-tee", "--seal-keys"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "--seal-keys needs an SGX enclave" in last
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hub_suites", ["x25519,mlkem768-x25519", "x25519"])
async def test_an_agent_requiring_post_quantum_sealing_uses_it_or_refuses_the_hub(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_suites: str
) -> None:
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        sample = np.asarray(data["X"][0], dtype=np.float32)
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"
    await migrate_hub(hub_dir)
    monkeypatch.setenv("ESCALADE_AGENT_MIN_HPKE_SUITE", "mlkem768-x25519")
    hub_argv = hub_command(
        hub_dir, bundle_dir, "--allow-simulated-tee", "--hpke-suites", hub_suites
    )
    async with service("hub", hub_argv, log_dir=tmp_path) as hub:
        await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
        agent_argv = agent_command(agent_dir, bundle_dir, "--allow-simulated-tee")
        async with (
            service("agent", agent_argv, log_dir=tmp_path) as agent,
            aiohttp.ClientSession() as http,
        ):
            outcome = await infer(http, agent.url, sample, "hub")
    response = outcome.response.model_dump(mode="json")
    if hub_suites == "x25519":
        assert response["source"] == "local"
        assert response["reason"] == "attestation_refused"
        log = (tmp_path / "agent.log").read_text()
        assert "hub offers x25519; this device needs at least mlkem768-x25519" in log
    else:
        assert response["source"] == "hub"
