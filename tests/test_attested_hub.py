"""A real hub process attesting through a Gramine-like /dev/attestation (a FIFO-backed fake)
whose quotes are SYNTHETIC DCAP quotes from a test PCK hierarchy, and real agent processes that
escalate only when their policy matches what the quote proves. The hub gets its collateral from
a file or from a PCCS on loopback."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from dcap_synth import SyntheticPki
from fake_gramine import FakeAttestationDir
from fake_pccs import serve_pccs

from escalade.demo import infer
from escalade.procs import agent_command, enroll_agent, hub_command, migrate_hub, service
from escalade_protocol.artifacts import load_manifest, verified_path

MRENCLAVE = b"\xe1" * 32


@dataclass(frozen=True)
class Scenario:
    bundle_dir: Path
    work: Path
    pki: SyntheticPki
    root: Path
    sample: npt.NDArray[np.float32]
    collateral_args: list[str]


def write_policy(path: Path, *, mrenclave: bytes, root: Path | None) -> Path:
    lines = ["[attestation]", f'mrenclave = ["{mrenclave.hex()}"]']
    if root is not None:
        lines.append(f'root_ca = "{root}"')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.timeout(90)
@pytest.mark.parametrize("collateral_from", ["file", "pccs"])
async def test_agent_trusts_the_hub_only_under_a_matching_policy(
    bundle_dir: Path, tmp_path: Path, collateral_from: str
) -> None:
    pki = SyntheticPki()
    root = tmp_path / "test-root.pem"
    root.write_bytes(pki.root_pem)
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        sample = np.asarray(data["X"][0], dtype=np.float32)
    async with contextlib.AsyncExitStack() as stack:
        if collateral_from == "pccs":
            url, hits = await stack.enter_async_context(serve_pccs(pki.collateral()))
            collateral_args = ["--pccs-url", url]
        else:
            path = tmp_path / "collateral.json"
            path.write_text(json.dumps(pki.collateral()))
            collateral_args = ["--collateral", str(path)]
        await run_scenario(Scenario(bundle_dir, tmp_path, pki, root, sample, collateral_args))
        if collateral_from == "pccs":
            assert "/sgx/certification/v4/tcb" in hits


async def run_scenario(s: Scenario) -> None:
    hub_dir, agent_dir = s.work / "hub", s.work / "agent"
    with FakeAttestationDir(
        s.work / "attestation",
        make_quote=lambda report_data: s.pki.quote(report_data=report_data, mr_enclave=MRENCLAVE),
        requests=10,
    ) as fake:
        await migrate_hub(hub_dir)
        hub_argv = hub_command(
            hub_dir, s.bundle_dir, "--attestation-dir", str(fake.root), *s.collateral_args
        )
        async with service("hub", hub_argv, log_dir=s.work) as hub:
            await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)

            async def ask(name: str, policy: Path) -> dict[str, object]:
                argv = agent_command(agent_dir, s.bundle_dir, "--policy", str(policy))
                async with (
                    service(name, argv, log_dir=s.work) as agent,
                    aiohttp.ClientSession() as http,
                ):
                    outcome = await infer(http, agent.url, s.sample, "hub")
                    return outcome.response.model_dump()

            trusted = await ask(
                "agent-matching",
                write_policy(s.work / "good.toml", mrenclave=MRENCLAVE, root=s.root),
            )
            assert trusted["source"] == "hub"
            attestation = trusted["attestation"]
            assert isinstance(attestation, dict)
            assert attestation["status"] == "affirming"
            assert attestation["tee"] == "sgx"
            assert attestation["insecure"] is False

            wrong = await ask(
                "agent-other-enclave",
                write_policy(s.work / "bad.toml", mrenclave=b"\x00" * 32, root=s.root),
            )
            assert wrong["source"] == "local"
            assert wrong["reason"] == "attestation_refused"
            attestation = wrong["attestation"]
            assert isinstance(attestation, dict)
            assert attestation["status"] == "contraindicated"
            assert "mrenclave" in str(attestation["detail"])

            # Trusting only Intel's real root, the test hierarchy's quote is refused.
            pinned = await ask(
                "agent-intel-root",
                write_policy(s.work / "intel.toml", mrenclave=MRENCLAVE, root=None),
            )
            assert pinned["source"] == "local"
            assert "pck_chain" in str(pinned["attestation"])
    # Each agent attested with its own fresh nonce: three quotes, three different REPORT_DATA
    # (plus, with a PCCS, the hub's probe quote that tells it its platform).
    attestations = [rd for rd in fake.served if rd != bytes(64)]
    assert len(attestations) == 3
    assert len(set(attestations)) == 3
