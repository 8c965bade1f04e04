"""`escalade attest verify` on every shared vector (DCAP and SNP), as a real subprocess, with
the verdicts the samples' README expects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from snp_synth import DEBUG_POLICY, MEASUREMENT, SnpPki
from test_appraisal_dcap import run_verify as dcap_cli

VECTORS = Path(__file__).parent / "vectors"
SNP = VECTORS / "snp"
IN_SNP_WINDOW = "2025-06-01T00:00:00Z"
IN_DCAP_WINDOW = "2025-07-01T00:00:00Z"


def run_verify(*args: str | Path) -> tuple[int, dict[str, object]]:
    return dcap_cli(*map(str, args))


def test_snp_v2_vcek_sample_affirms() -> None:
    code, report = run_verify(
        "--quote", SNP / "snp_v2_report_vcek.bin", "--vcek", SNP / "snp_vcek.der"
    )
    assert code == 0
    assert report["tee"] == "sev-snp"
    assert report["crypto_ok"] is True
    assert report["quote_version"] == 2
    assert report["status"] == "affirming"
    assert report["failures"] == []
    assert report["relaxations"] == []
    measurements = report["measurements"]
    assert isinstance(measurements, dict)
    assert measurements["policy"] == "0x3001f"
    assert measurements["debug"] is False
    assert measurements["product"] == "Milan"
    assert str(measurements["measurement"]).startswith("a1f3930413247bb3")


def test_snp_v3_vlek_sample_verifies_inside_its_validity() -> None:
    code, report = run_verify(
        "--quote",
        SNP / "snp_v3_report_vlek.bin",
        "--vcek",
        SNP / "snp_vlek.der",
        "--now",
        IN_SNP_WINDOW,
    )
    assert code == 0
    assert report["crypto_ok"] is True
    assert report["quote_version"] == 3
    measurements = report["measurements"]
    assert isinstance(measurements, dict)
    assert measurements["signing_key"] == "vlek"
    # The sample comes from VMPL 1; the default policy wants VMPL 0.
    assert report["failures"] == ["vmpl"]


def test_snp_vlek_after_its_expiry_exits_1() -> None:
    code, report = run_verify(
        "--quote",
        SNP / "snp_v3_report_vlek.bin",
        "--vcek",
        SNP / "snp_vlek.der",
        "--now",
        "2026-01-01T00:00:00Z",
    )
    assert code == 1
    assert "cert_expired" in report["failures"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("report_file", "key"),
    [("snp_v2_report_vcek.bin", "snp_vcek.der"), ("snp_v3_report_vlek.bin", "snp_vlek.der")],
)
@pytest.mark.parametrize("family", ["genoa", "turin"])
def test_snp_cross_family_chain_exits_1(report_file: str, key: str, family: str) -> None:
    code, report = run_verify(
        "--quote",
        SNP / report_file,
        "--vcek",
        SNP / key,
        "--chain",
        SNP / f"amd_{family}_ask_ark_asvk.pem",
        "--now",
        IN_SNP_WINDOW,
    )
    assert code == 1
    assert report["crypto_ok"] is False
    assert "cert_chain" in report["failures"]  # type: ignore[operator]


def test_snp_hex_report_and_tampering(tmp_path: Path) -> None:
    raw = bytearray((SNP / "snp_v2_report_vcek.bin").read_bytes())
    hex_file = tmp_path / "report.hex"
    hex_file.write_text(raw.hex() + "\n")
    code, report = run_verify("--quote", hex_file, "--vcek", SNP / "snp_vcek.der")
    assert code == 0
    assert report["tee"] == "sev-snp"
    raw[0x90] ^= 1  # the launch measurement
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(bytes(raw))
    code, report = run_verify("--quote", tampered, "--vcek", SNP / "snp_vcek.der")
    assert code == 1
    assert report["failures"] == ["report_signature"]


def test_snp_without_vcek_exits_1() -> None:
    code, report = run_verify("--quote", SNP / "snp_v2_report_vcek.bin")
    assert code == 1
    assert report["failures"] == ["vcek_missing"]


def test_snp_debug_guest_under_policy_and_relaxation(tmp_path: Path) -> None:
    pki = SnpPki()
    (tmp_path / "report.bin").write_bytes(pki.report(policy=DEBUG_POLICY))
    (tmp_path / "vcek.der").write_bytes(pki.vcek_der())
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem())
    (tmp_path / "ark.pem").write_bytes(pki.ark_pem())
    base = f'snp_measurement = ["{MEASUREMENT.hex()}"]\nsnp_ark = "ark.pem"\n'
    (tmp_path / "strict.toml").write_text(base)
    (tmp_path / "relaxed.toml").write_text(base + "allow_debug = true\n")
    common = ("--quote", tmp_path / "report.bin", "--vcek", tmp_path / "vcek.der")
    common += ("--chain", tmp_path / "chain.pem", "--now", IN_SNP_WINDOW)
    code, strict = run_verify(*common, "--policy", tmp_path / "strict.toml")
    assert code == 0
    assert strict["status"] == "contraindicated"
    assert strict["failures"] == ["debug"]
    code, relaxed = run_verify(*common, "--policy", tmp_path / "relaxed.toml")
    assert code == 0
    assert relaxed["status"] == "warning"
    assert relaxed["relaxations"] == ["allow_debug"]
    # The pinned ARKs do not know the test PKI.
    code, pinned = run_verify(*common)
    assert code == 1
    assert "cert_chain" in pinned["failures"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "tee", "status"),
    [("sgx_v3", "sgx", "contraindicated"), ("tdx_v4", "tdx", "affirming")],
)
def test_dcap_samples_with_trailing_bytes(tmp_path: Path, name: str, tee: str, status: str) -> None:
    quote = tmp_path / "quote.bin"
    quote.write_bytes((VECTORS / f"{name}_quote.bin").read_bytes() + b"\xde\xad")
    code, report = run_verify(
        "--quote",
        quote,
        "--collateral",
        VECTORS / f"{name}_collateral.json",
        "--now",
        IN_DCAP_WINDOW,
    )
    assert code == 0
    assert report["tee"] == tee
    assert report["status"] == status
    assert report["crypto_ok"] is True
    base = 70 if name == "tdx_v4" else 0  # the TDX sample already carries 70 zero bytes
    assert report["trailing_bytes"] == base + 2


def test_mixing_dcap_and_snp_inputs_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "escalade.cli",
            "attest",
            "verify",
            "--quote",
            str(VECTORS / "sgx_v3_quote.bin"),
            "--vcek",
            str(SNP / "snp_vcek.der"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "SEV-SNP" in result.stdout + result.stderr


def test_snp_crl_option_revokes(tmp_path: Path) -> None:
    pki = SnpPki()
    (tmp_path / "report.bin").write_bytes(pki.report())
    (tmp_path / "vcek.der").write_bytes(pki.vcek_der())
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem())
    (tmp_path / "ark.pem").write_bytes(pki.ark_pem())
    (tmp_path / "crl.der").write_bytes(pki.crl(revoked=(pki.ask.serial_number,)))
    code, report = run_verify(
        "--quote",
        tmp_path / "report.bin",
        "--vcek",
        tmp_path / "vcek.der",
        "--chain",
        tmp_path / "chain.pem",
        "--crl",
        tmp_path / "crl.der",
        "--root",
        tmp_path / "ark.pem",
        "--now",
        IN_SNP_WINDOW,
    )
    assert code == 1
    assert report["failures"] == ["cert_revoked"]
