"""`escalade attest verify`: appraise a DCAP quote offline and print the verdict."""

from __future__ import annotations

import json
import string
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from attestation import AppraisalPolicy, DcapCollateral, DcapEvidence, Verdict, appraise

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


def read_quote(path: Path) -> bytes:
    """A quote file, raw or hex-encoded."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerifyError(f"cannot read quote {path}: {exc}") from None
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


def verify(
    *,
    quote: Path,
    collateral: Path | None,
    root: Path | None,
    now: str | None,
    policy: Path | None,
    expect_report_data: str | None = None,
) -> VerdictReport:
    # Without a policy we inspect: every cryptographic and TCB check, no identity requirement.
    rules = AppraisalPolicy.load(policy) if policy else AppraisalPolicy(require_identity=False)
    if root is not None:
        try:
            rules = replace(rules, root_ca_pem=root.read_bytes())
            rules.root_ca()
        except (OSError, ValueError) as exc:
            raise VerifyError(f"cannot load root CA {root}: {exc}") from None
    expected = None
    if expect_report_data is not None:
        try:
            expected = bytes.fromhex(expect_report_data)
        except ValueError:
            raise VerifyError("--expect-report-data is not hex") from None
    evidence = DcapEvidence(
        quote=read_quote(quote), collateral=read_collateral(collateral) if collateral else None
    )
    moment = parse_now(now)
    verdict = appraise(evidence, expected_report_data=expected, policy=rules, now=moment)
    return VerdictReport.from_verdict(verdict, moment)
