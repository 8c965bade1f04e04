"""Appraisal of DCAP evidence: synthetic quotes from a test PCK hierarchy (TEST KEYS), so that
each policy failure can be produced on purpose, plus the CLI on the real shared samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dcap_synth import SyntheticPki

from attestation import AppraisalPolicy, DcapCollateral, DcapEvidence, Status, Verdict, appraise

VECTORS = Path(__file__).parent / "vectors"
MRENCLAVE = b"\xe1" * 32
MRSIGNER = b"\x51" * 32
BINDING = os.urandom(64)


@pytest.fixture(scope="module")
def pki() -> SyntheticPki:
    return SyntheticPki()


@pytest.fixture(scope="module")
def revoked_pki() -> SyntheticPki:
    return SyntheticPki(revoke_pck=True)


def policy_for(pki: SyntheticPki, **changes: object) -> AppraisalPolicy:
    policy = AppraisalPolicy(mrenclave=frozenset({MRENCLAVE}), root_ca_pem=pki.root_pem)
    return replace(policy, **changes)  # type: ignore[arg-type]


def appraise_quote(
    pki: SyntheticPki,
    policy: AppraisalPolicy,
    *,
    tcb_status: str = "UpToDate",
    collateral: bool = True,
    **quote_args: object,
) -> Verdict:
    quote_args.setdefault("report_data", BINDING)
    evidence = DcapEvidence(
        quote=pki.quote(**quote_args),  # type: ignore[arg-type]
        collateral=DcapCollateral.model_validate(pki.collateral(tcb_status=tcb_status))
        if collateral
        else None,
    )
    return appraise(evidence, expected_report_data=BINDING, policy=policy, now=datetime.now(UTC))


def checks(verdict: Verdict) -> set[str]:
    return {f.check for f in verdict.failures}


def test_matching_quote_is_affirming(pki: SyntheticPki) -> None:
    verdict = appraise_quote(pki, policy_for(pki))
    assert verdict.failures == ()
    assert verdict.status is Status.AFFIRMING
    assert verdict.crypto_ok
    assert verdict.tcb_status == "UpToDate"
    assert verdict.measurements["mrenclave"] == MRENCLAVE.hex()
    assert verdict.report_data == BINDING


def test_debug_enclave_is_refused_unless_relaxed(pki: SyntheticPki) -> None:
    verdict = appraise_quote(pki, policy_for(pki), debug=True)
    assert checks(verdict) == {"debug"}
    assert verdict.crypto_ok
    relaxed = appraise_quote(pki, policy_for(pki, allow_debug=True), debug=True)
    assert relaxed.status is Status.WARNING
    assert relaxed.relaxations == ("allow_debug",)


def test_wrong_mrenclave(pki: SyntheticPki) -> None:
    verdict = appraise_quote(pki, policy_for(pki), mr_enclave=b"\x00" * 32)
    assert checks(verdict) == {"mrenclave"}


def test_svn_below_minimum_under_an_mrsigner_policy(pki: SyntheticPki) -> None:
    policy = policy_for(
        pki, mrenclave=frozenset(), mrsigner=frozenset({MRSIGNER}), isv_prod_id=7, min_isv_svn=5
    )
    assert checks(appraise_quote(pki, policy, isv_svn=3)) == {"isv_svn"}
    assert appraise_quote(pki, policy, isv_svn=5).status is Status.AFFIRMING
    assert checks(appraise_quote(pki, policy, isv_svn=9, isv_prod_id=8)) == {"isv_prod_id"}
    assert checks(appraise_quote(pki, policy, isv_svn=9, mr_signer=b"\x00" * 32)) == {"mrsigner"}


def test_wrong_report_data_binding(pki: SyntheticPki) -> None:
    verdict = appraise_quote(pki, policy_for(pki), report_data=os.urandom(64))
    assert checks(verdict) == {"report_data"}


def test_revoked_pck_is_named(revoked_pki: SyntheticPki) -> None:
    verdict = appraise_quote(revoked_pki, policy_for(revoked_pki))
    assert "pck_revoked" in checks(verdict)
    assert not verdict.crypto_ok
    assert verdict.status is Status.CONTRAINDICATED


def test_every_failure_is_listed_at_once(pki: SyntheticPki) -> None:
    verdict = appraise_quote(
        pki, policy_for(pki), debug=True, mr_enclave=b"\x00" * 32, report_data=os.urandom(64)
    )
    assert {"debug", "mrenclave", "report_data"} <= checks(verdict)


def test_outdated_tcb_only_when_named(pki: SyntheticPki) -> None:
    verdict = appraise_quote(pki, policy_for(pki), tcb_status="SWHardeningNeeded")
    assert checks(verdict) == {"tcb_status"}
    relaxed = appraise_quote(
        pki,
        policy_for(pki, accepted_tcb_statuses=frozenset({"UpToDate", "SWHardeningNeeded"})),
        tcb_status="SWHardeningNeeded",
    )
    assert relaxed.status is Status.WARNING
    assert relaxed.relaxations == ("accepted_tcb_status:SWHardeningNeeded",)


def test_no_collateral_means_unknown_tcb_and_no_trust(pki: SyntheticPki) -> None:
    verdict = appraise_quote(pki, policy_for(pki), collateral=False)
    assert verdict.tcb_status == "Unknown"
    assert verdict.crypto_ok
    assert checks(verdict) == {"tcb_status"}


def test_test_hierarchy_is_refused_under_the_pinned_intel_root(pki: SyntheticPki) -> None:
    verdict = appraise_quote(pki, policy_for(pki, root_ca_pem=None))
    assert not verdict.crypto_ok
    assert "pck_chain" in checks(verdict)


def test_a_policy_without_identity_trusts_no_enclave(pki: SyntheticPki) -> None:
    verdict = appraise_quote(pki, policy_for(pki, mrenclave=frozenset()))
    assert checks(verdict) == {"identity_policy"}


# -- the CLI on the real shared quotes --------------------------------------------------------

IN_WINDOW = "2025-07-01T00:00:00Z"


def run_verify(*args: str) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "escalade.cli", "attest", "verify", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_cli_sgx_sample() -> None:
    code, report = run_verify(
        "--quote",
        str(VECTORS / "sgx_v3_quote.bin"),
        "--collateral",
        str(VECTORS / "sgx_v3_collateral.json"),
        "--now",
        IN_WINDOW,
    )
    assert code == 0
    assert report["tee"] == "sgx"
    assert report["quote_version"] == 3
    assert report["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert {"INTEL-SA-00289", "INTEL-SA-00615"} <= set(report["advisory_ids"])  # type: ignore[arg-type]
    assert str(report["report_data"]).startswith(b"Hello, world!".hex())
    measurements = report["measurements"]
    assert isinstance(measurements, dict)
    assert {"mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug"} <= set(measurements)
    # Not UpToDate and no relaxation: a correct quote, but not one to trust as it stands.
    assert report["status"] == "contraindicated"
    assert report["failures"] == ["tcb_status"]


def test_cli_tdx_sample_reads_hex_too(tmp_path: Path) -> None:
    hex_quote = tmp_path / "quote.hex"
    hex_quote.write_text((VECTORS / "tdx_v4_quote.bin").read_bytes().hex() + "\n")
    code, report = run_verify(
        "--quote",
        str(hex_quote),
        "--collateral",
        str(VECTORS / "tdx_v4_collateral.json"),
        "--now",
        IN_WINDOW,
    )
    assert code == 0
    assert report["tee"] == "tdx"
    assert report["quote_version"] == 4
    assert report["tcb_status"] == "UpToDate"
    assert report["status"] == "affirming"
    measurements = report["measurements"]
    assert isinstance(measurements, dict)
    assert {"mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3"} <= set(measurements)


def test_cli_after_collateral_expiry_is_not_affirming() -> None:
    code, report = run_verify(
        "--quote",
        str(VECTORS / "tdx_v4_quote.bin"),
        "--collateral",
        str(VECTORS / "tdx_v4_collateral.json"),
        "--now",
        "2025-09-01T00:00:00Z",
    )
    assert report["status"] == "contraindicated"
    assert any("expired" in str(name) for name in report["failures"])  # type: ignore[attr-defined]
    assert code == 1


def test_cli_tampered_quote_exits_nonzero(tmp_path: Path) -> None:
    data = bytearray((VECTORS / "sgx_v3_quote.bin").read_bytes())
    data[100] ^= 0x01
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(bytes(data))
    code, report = run_verify(
        "--quote",
        str(tampered),
        "--collateral",
        str(VECTORS / "sgx_v3_collateral.json"),
        "--now",
        IN_WINDOW,
    )
    assert code == 1
    assert report["crypto_ok"] is False
    assert "quote_signature" in report["failures"]  # type: ignore[operator]
