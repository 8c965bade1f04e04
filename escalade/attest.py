"""`escalade attest verify`: appraise a DCAP quote or an SEV-SNP report offline.

The kind is detected from the bytes (raw or hex): a 1,184-byte version 2/3 report with the
ECDSA P-384 algorithm is SNP, anything else is read as a DCAP quote (SGX or TDX).
"""

from __future__ import annotations

import json
import string
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from pydantic import BaseModel, ConfigDict

from attestation import (
    AppraisalPolicy,
    DcapCollateral,
    DcapEvidence,
    Evidence,
    SnpEvidence,
    Verdict,
    appraise,
)
from attestation.snp import looks_like_snp_report

_HEX = set(string.hexdigits) | set(string.whitespace)


class VerifyError(Exception):
    """An input file is missing or malformed (not a verdict: nothing was appraised)."""


class FailureReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    check: str
    message: str


class VerdictReport(BaseModel):
    """The verdict as JSON: EAR-style status plus what was measured and what failed."""

    model_config = ConfigDict(frozen=True)
    tee: str
    quote_version: int | None
    status: str
    crypto_ok: bool
    tcb_status: str | None
    advisory_ids: list[str]
    measurements: dict[str, str | int | bool]
    report_data: str
    failures: list[str]
    failure_details: list[FailureReport]
    relaxations: list[str]
    trailing_bytes: int
    now: str

    @classmethod
    def from_verdict(cls, verdict: Verdict, now: datetime) -> VerdictReport:
        return cls(
            tee=verdict.tee,
            quote_version=verdict.quote_version,
            status=verdict.status.value,
            crypto_ok=verdict.crypto_ok,
            tcb_status=verdict.tcb_status,
            advisory_ids=list(verdict.advisory_ids),
            measurements=dict(verdict.measurements),
            report_data=verdict.report_data.hex(),
            failures=[f.check for f in verdict.failures],
            failure_details=[
                FailureReport(check=f.check, message=f.message) for f in verdict.failures
            ],
            relaxations=list(verdict.relaxations),
            trailing_bytes=verdict.trailing_bytes,
            now=now.isoformat(),
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VerifyError(f"cannot read {what} {path}: {exc}") from None


def read_quote(path: Path) -> bytes:
    """A quote or report file, raw or hex-encoded."""
    data = _read(path, "quote")
    text = data.decode("ascii", errors="replace")
    if data and all(c in _HEX for c in text):
        compact = "".join(text.split()).removeprefix("0x")
        try:
            return bytes.fromhex(compact)
        except ValueError:
            raise VerifyError(f"{path} looks like hex but does not decode") from None
    return data


def read_collateral(path: Path) -> DcapCollateral:
    try:
        return DcapCollateral.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise VerifyError(f"cannot read collateral {path}: {exc}") from None


def parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise VerifyError(f"--now {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _snp_evidence(
    report: bytes, vcek: Path | None, chain: Path | None, crl: Path | None
) -> SnpEvidence:
    chain_pem = None
    if chain is not None:
        try:
            chain_pem = _read(chain, "certificate chain").decode("ascii")
        except UnicodeDecodeError:
            raise VerifyError(f"{chain} is not a PEM certificate chain") from None
    return SnpEvidence(
        report=report,
        vcek=_read(vcek, "VCEK/VLEK") if vcek else None,
        cert_chain=chain_pem,
        crl=_read(crl, "CRL") if crl else None,
    )


def verify(
    *,
    quote: Path,
    collateral: Path | None,
    root: Path | None,
    now: str | None,
    policy: Path | None,
    expect_report_data: str | None = None,
    vcek: Path | None = None,
    chain: Path | None = None,
    crl: Path | None = None,
) -> VerdictReport:
    # Without a policy we inspect: every cryptographic and TCB check, no identity requirement.
    rules = AppraisalPolicy.load(policy) if policy else AppraisalPolicy(require_identity=False)
    raw = read_quote(quote)
    snp = looks_like_snp_report(raw)
    if root is not None:
        # The root to trust instead of the pinned one: Intel's for DCAP, an ARK for SNP.
        try:
            pem = root.read_bytes()
            x509.load_pem_x509_certificate(pem)
        except (OSError, ValueError) as exc:
            raise VerifyError(f"cannot load root CA {root}: {exc}") from None
        rules = replace(rules, snp_ark_pem=pem) if snp else replace(rules, root_ca_pem=pem)
    expected = None
    if expect_report_data is not None:
        try:
            expected = bytes.fromhex(expect_report_data)
        except ValueError:
            raise VerifyError("--expect-report-data is not hex") from None
    evidence: Evidence
    if snp:
        if collateral is not None:
            raise VerifyError("--collateral is DCAP collateral; an SNP report takes --vcek/--chain")
        evidence = _snp_evidence(raw, vcek, chain, crl)
    else:
        if vcek is not None or chain is not None or crl is not None:
            raise VerifyError("--vcek/--chain/--crl are for SEV-SNP reports, this is a DCAP quote")
        evidence = DcapEvidence(
            quote=raw, collateral=read_collateral(collateral) if collateral else None
        )
    moment = parse_now(now)
    verdict = appraise(evidence, expected_report_data=expected, policy=rules, now=moment)
    return VerdictReport.from_verdict(verdict, moment)
