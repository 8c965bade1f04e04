"""Appraisal: evidence + expected binding + policy -> a verdict listing every failed check.

Outcomes follow the IETF EAR draft's trust tiers: ``affirming`` (every check passed, nothing
relaxed), ``warning`` (passed only because the policy explicitly relaxed something: the
simulated TEE, a debug enclave, a TCB status other than UpToDate), ``contraindicated`` (some
check failed). Only the first two allow escalation, and ``warning`` is reported to applications
with every answer. Appraisal is pure: "now" and the trusted root are inputs, nothing is fetched.

A policy file (TOML, keys at top level or under ``[attestation]``)::

    allow_simulated_tee = false                # INSECURE relaxation, development only
    allowed_tees = ["sgx", "tdx"]
    mrenclave = ["<64 hex>", ...]               # exact enclaves allowed, or:
    mrsigner = ["<64 hex>"]                     # signer + product + minimum security version
    isv_prod_id = 1
    min_isv_svn = 2
    mr_td = ["<96 hex>"]                        # TDX: exact TDs allowed
    allow_debug = false                         # relaxation
    accepted_tcb_statuses = ["UpToDate"]        # e.g. add "SWHardeningNeeded" (relaxation)
    root_ca = "/path/root.pem"                  # default: the pinned Intel SGX Root CA
    # AMD SEV-SNP (allowed_tees gains "sev-snp"):
    snp_measurement = ["<96 hex>", ...]         # launch measurements allowed
    snp_allow_migration_agent = false           # relaxation: a migration agent may be bound
    snp_allow_smt = true                        # false: refuse SMT allowed or enabled
    snp_max_vmpl = 0                            # the report must come from VMPL <= this
    snp_min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
    snp_ark = "/path/ark.pem"                   # default: AMD's pinned ARKs (test PKIs only)
"""

from __future__ import annotations

import hmac
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from cryptography import x509
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from attestation.dcap import Collateral, EnclaveReport, TdReport, verify_quote
from attestation.evidence import DcapEvidence, Evidence, SimulatedEvidence, SnpEvidence
from attestation.snp import SnpReport, TcbVersion, verify_report

UP_TO_DATE = "UpToDate"


class Status(StrEnum):
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


class PolicyError(ValueError):
    """A policy file is missing, malformed or names unknown keys."""


@dataclass(frozen=True, slots=True)
class Failure:
    check: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AppraisalPolicy:
    # Relaxation: accept evidence from the software-only attester. Never in production.
    allow_simulated_tee: bool = False
    allowed_tees: frozenset[str] = frozenset({"sgx", "tdx", "sev-snp"})
    mrenclave: frozenset[bytes] = frozenset()
    mrsigner: frozenset[bytes] = frozenset()
    isv_prod_id: int | None = None
    min_isv_svn: int = 0
    mr_td: frozenset[bytes] = frozenset()
    allow_debug: bool = False
    accepted_tcb_statuses: frozenset[str] = frozenset({UP_TO_DATE})
    # False only for inspecting evidence (the CLI without --policy): no identity is required.
    require_identity: bool = True
    # PEM of the root to trust instead of the pinned Intel SGX Root CA (test hierarchies).
    root_ca_pem: bytes | None = None
    snp_measurements: frozenset[bytes] = frozenset()
    snp_allow_migration_agent: bool = False
    snp_allow_smt: bool = True
    snp_max_vmpl: int = 0
    snp_min_tcb: TcbVersion | None = None
    # PEM of an ARK to trust instead of AMD's pinned ones (test hierarchies).
    snp_ark_pem: bytes | None = None

    def root_ca(self) -> x509.Certificate | None:
        return x509.load_pem_x509_certificate(self.root_ca_pem) if self.root_ca_pem else None

    def snp_ark(self) -> x509.Certificate | None:
        return x509.load_pem_x509_certificate(self.snp_ark_pem) if self.snp_ark_pem else None

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], *, base_dir: Path | None = None
    ) -> AppraisalPolicy:
        try:
            parsed = _PolicyFile.model_validate(dict(data))
        except ValidationError as exc:
            raise PolicyError(f"invalid attestation policy: {exc}") from None
        min_tcb = parsed.snp_min_tcb
        return cls(
            allow_simulated_tee=parsed.allow_simulated_tee,
            allowed_tees=frozenset(parsed.allowed_tees),
            mrenclave=frozenset(parsed.mrenclave),
            mrsigner=frozenset(parsed.mrsigner),
            isv_prod_id=parsed.isv_prod_id,
            min_isv_svn=parsed.min_isv_svn,
            mr_td=frozenset(parsed.mr_td),
            allow_debug=parsed.allow_debug,
            accepted_tcb_statuses=frozenset(parsed.accepted_tcb_statuses),
            root_ca_pem=_load_pem(parsed.root_ca, "root_ca", base_dir),
            snp_measurements=frozenset(parsed.snp_measurement),
            snp_allow_migration_agent=parsed.snp_allow_migration_agent,
            snp_allow_smt=parsed.snp_allow_smt,
            snp_max_vmpl=parsed.snp_max_vmpl,
            snp_min_tcb=TcbVersion(**min_tcb.model_dump()) if min_tcb is not None else None,
            snp_ark_pem=_load_pem(parsed.snp_ark, "snp_ark", base_dir),
        )

    @classmethod
    def load(cls, path: Path) -> AppraisalPolicy:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"cannot read policy {path}: {exc}") from None
        table = data.get("attestation", data)
        if not isinstance(table, dict):
            raise PolicyError(f"{path}: [attestation] must be a table")
        return cls.from_mapping(table, base_dir=path.parent)


def _load_pem(name: str | None, key: str, base_dir: Path | None) -> bytes | None:
    """A certificate file named by the policy (relative to the policy file), checked."""
    if name is None:
        return None
    path = Path(name)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        pem = path.read_bytes()
        x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        raise PolicyError(f"cannot load {key} {path}: {exc}") from None
    return pem


def _hex_list(size: int) -> object:
    def convert(value: object) -> list[bytes]:
        if not isinstance(value, list):
            raise ValueError("expected a list of hex strings")
        out = []
        for item in value:
            raw = bytes.fromhex(str(item))
            if len(raw) != size:
                raise ValueError(f"{item!r} is not {size} bytes of hex")
            out.append(raw)
        return out

    return BeforeValidator(convert)


class _MinTcb(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bootloader: int = Field(default=0, ge=0, le=255)
    tee: int = Field(default=0, ge=0, le=255)
    snp: int = Field(default=0, ge=0, le=255)
    microcode: int = Field(default=0, ge=0, le=255)
    fmc: int | None = Field(default=None, ge=0, le=255)


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_simulated_tee: bool = False
    allowed_tees: list[str] = Field(default_factory=lambda: ["sgx", "tdx", "sev-snp"])
    mrenclave: Annotated[list[bytes], _hex_list(32)] = Field(default_factory=list)
    mrsigner: Annotated[list[bytes], _hex_list(32)] = Field(default_factory=list)
    isv_prod_id: int | None = Field(default=None, ge=0, lt=1 << 16)
    min_isv_svn: int = Field(default=0, ge=0, lt=1 << 16)
    mr_td: Annotated[list[bytes], _hex_list(48)] = Field(default_factory=list)
    allow_debug: bool = False
    accepted_tcb_statuses: list[str] = Field(default_factory=lambda: [UP_TO_DATE])
    root_ca: str | None = None
    snp_measurement: Annotated[list[bytes], _hex_list(48)] = Field(default_factory=list)
    snp_allow_migration_agent: bool = False
    snp_allow_smt: bool = True
    snp_max_vmpl: int = Field(default=0, ge=0, le=3)
    snp_min_tcb: _MinTcb | None = None
    snp_ark: str | None = None


Measurements = dict[str, str | int | bool]


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    tee: str
    insecure: bool
    failures: tuple[Failure, ...] = ()
    relaxations: tuple[str, ...] = ()
    crypto_ok: bool = True
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    quote_version: int | None = None
    measurements: Measurements = field(default_factory=dict)
    report_data: bytes = b""
    trailing_bytes: int = 0  # unsigned bytes after a quote's signature data, ignored
    # When the evidence's collateral or certificates go stale, and when it was appraised:
    # a verdict authorises nothing past `valid_until` (the agent re-attests before then).
    valid_until: datetime | None = None
    appraised_at: datetime | None = None

    @property
    def allows_escalation(self) -> bool:
        return self.status is not Status.CONTRAINDICATED

    @property
    def valid_for_s(self) -> float | None:
        """Seconds from appraisal to `valid_until` (None: no end beyond the caller's TTL)."""
        if self.valid_until is None or self.appraised_at is None:
            return None
        return (self.valid_until - self.appraised_at).total_seconds()

    def summary(self) -> str:
        if self.failures:
            return "; ".join(f"{f.check}: {f.message}" for f in self.failures)
        if self.relaxations:
            return "accepted only through relaxations: " + ", ".join(self.relaxations)
        return "all checks passed"


def appraise(
    evidence: Evidence,
    *,
    expected_report_data: bytes | None,
    policy: AppraisalPolicy,
    now: datetime | None = None,
) -> Verdict:
    """Appraise evidence; `expected_report_data` None skips the binding check (inspection)."""
    if isinstance(evidence, SimulatedEvidence):
        return _appraise_simulated(evidence, expected_report_data, policy)
    if isinstance(evidence, SnpEvidence):
        return _appraise_snp(evidence, expected_report_data, policy, now or datetime.now(UTC))
    return _appraise_dcap(evidence, expected_report_data, policy, now or datetime.now(UTC))


def _status(failures: list[Failure], relaxations: list[str]) -> Status:
    if failures:
        return Status.CONTRAINDICATED
    return Status.WARNING if relaxations else Status.AFFIRMING


def _check_binding(report_data: bytes, expected: bytes | None, failures: list[Failure]) -> None:
    if expected is not None and not hmac.compare_digest(report_data, expected):
        failures.append(
            Failure("report_data", "REPORT_DATA does not bind the hub keys and our nonce")
        )


def _appraise_simulated(
    evidence: SimulatedEvidence, expected: bytes | None, policy: AppraisalPolicy
) -> Verdict:
    failures: list[Failure] = []
    relaxations: list[str] = []
    if policy.allow_simulated_tee:
        relaxations.append("allow_simulated_tee")
    else:
        failures.append(
            Failure(
                "tee_type",
                "hub offers simulated (insecure) evidence and the policy does not "
                "set allow_simulated_tee",
            )
        )
    _check_binding(evidence.report_data, expected, failures)
    # The simulated measurement stands in for MRENCLAVE, so the same allowlist applies.
    if policy.mrenclave and evidence.measurement not in policy.mrenclave:
        failures.append(Failure("mrenclave", "code measurement is not in the allowlist"))
    return Verdict(
        status=_status(failures, relaxations),
        tee=evidence.type,
        insecure=True,
        failures=tuple(failures),
        relaxations=tuple(relaxations),
        measurements={"measurement": evidence.measurement.hex()},
        report_data=evidence.report_data,
    )


def _appraise_dcap(
    evidence: DcapEvidence, expected: bytes | None, policy: AppraisalPolicy, now: datetime
) -> Verdict:
    failures: list[Failure] = []
    relaxations: list[str] = []
    collateral: Collateral | None = None
    if evidence.collateral is not None:
        try:
            collateral = Collateral.from_json(evidence.collateral.model_dump())
        except ValueError as exc:
            failures.append(Failure("collateral_format", str(exc)))
    result = verify_quote(evidence.quote, now=now, collateral=collateral, root_ca=policy.root_ca())
    failures.extend(Failure(f.check, f.message) for f in result.failures)
    crypto_ok = not failures
    measurements: Measurements = {}
    report_data = b""
    if result.quote is not None:
        report_data = result.quote.body.report_data
        if result.tee not in policy.allowed_tees:
            failures.append(Failure("tee_type", f"TEE {result.tee} is not allowed by the policy"))
        measurements = _appraise_body(result.quote.body, policy, failures, relaxations)
        _check_binding(report_data, expected, failures)
    tcb_status = result.tcb_status
    if tcb_status in policy.accepted_tcb_statuses:
        if tcb_status != UP_TO_DATE:
            relaxations.append(f"accepted_tcb_status:{tcb_status}")
    else:
        failures.append(
            Failure("tcb_status", f"TCB status {tcb_status} is not accepted by the policy")
        )
    return Verdict(
        status=_status(failures, relaxations),
        tee=result.tee,
        insecure=False,
        failures=tuple(failures),
        relaxations=tuple(relaxations),
        crypto_ok=crypto_ok,
        tcb_status=tcb_status,
        advisory_ids=tuple(result.advisory_ids),
        quote_version=result.quote_version,
        measurements=measurements,
        report_data=report_data,
        trailing_bytes=result.trailing_bytes,
        valid_until=result.valid_until,
        appraised_at=now,
    )


def _appraise_body(
    body: EnclaveReport | TdReport,
    policy: AppraisalPolicy,
    failures: list[Failure],
    relaxations: list[str],
) -> Measurements:
    """Debug mode and identity of the attested enclave or TD; returns its measurements."""
    if body.debug:
        if policy.allow_debug:
            relaxations.append("allow_debug")
        else:
            failures.append(Failure("debug", "the enclave runs in debug mode"))
    if isinstance(body, EnclaveReport):
        failures.extend(_sgx_identity(body, policy))
        return {
            "mrenclave": body.mr_enclave.hex(),
            "mrsigner": body.mr_signer.hex(),
            "isv_prod_id": body.isv_prod_id,
            "isv_svn": body.isv_svn,
            "debug": body.debug,
        }
    if policy.mr_td and body.mr_td not in policy.mr_td:
        failures.append(Failure("mr_td", "MRTD is not in the allowlist"))
    elif not policy.mr_td and policy.require_identity:
        failures.append(Failure("identity_policy", "the policy names no allowed MRTD"))
    return {
        "mr_td": body.mr_td.hex(),
        "rtmr0": body.rtmr0.hex(),
        "rtmr1": body.rtmr1.hex(),
        "rtmr2": body.rtmr2.hex(),
        "rtmr3": body.rtmr3.hex(),
        "debug": body.debug,
    }


def _sgx_identity(body: EnclaveReport, policy: AppraisalPolicy) -> list[Failure]:
    mr_enclave, mr_signer = body.mr_enclave, body.mr_signer
    isv_prod_id, isv_svn = body.isv_prod_id, body.isv_svn
    failures: list[Failure] = []
    if policy.mrenclave:
        if mr_enclave not in policy.mrenclave:
            failures.append(Failure("mrenclave", "MRENCLAVE is not in the allowlist"))
        return failures
    if not policy.mrsigner:
        if policy.require_identity:
            failures.append(
                Failure("identity_policy", "the policy names no allowed MRENCLAVE or MRSIGNER")
            )
        return failures
    if mr_signer not in policy.mrsigner:
        failures.append(Failure("mrsigner", "MRSIGNER is not in the allowlist"))
    if policy.isv_prod_id is not None and isv_prod_id != policy.isv_prod_id:
        failures.append(
            Failure(
                "isv_prod_id", f"ISV product id {isv_prod_id}, policy wants {policy.isv_prod_id}"
            )
        )
    if isv_svn < policy.min_isv_svn:
        failures.append(
            Failure("isv_svn", f"ISV SVN {isv_svn} is below the minimum {policy.min_isv_svn}")
        )
    return failures


def _appraise_snp(
    evidence: SnpEvidence, expected: bytes | None, policy: AppraisalPolicy, now: datetime
) -> Verdict:
    failures: list[Failure] = []
    relaxations: list[str] = []
    result = verify_report(
        evidence.report,
        now=now,
        vcek=evidence.vcek,
        chain=evidence.cert_chain.encode() if evidence.cert_chain is not None else None,
        crl=evidence.crl,
        ark=policy.snp_ark(),
    )
    failures.extend(Failure(f.check, f.message) for f in result.failures)
    crypto_ok = not failures
    measurements: Measurements = {}
    report_data = b""
    if result.report is not None:
        report = result.report
        report_data = report.report_data
        if "sev-snp" not in policy.allowed_tees:
            failures.append(Failure("tee_type", "TEE sev-snp is not allowed by the policy"))
        _appraise_snp_guest(report, policy, failures, relaxations)
        tcb = result.reported_tcb
        if (
            policy.snp_min_tcb is not None
            and tcb is not None
            and not tcb.at_least(policy.snp_min_tcb)
        ):
            failures.append(
                Failure(
                    "min_tcb",
                    f"reported TCB {tcb.as_dict()} is below {policy.snp_min_tcb.as_dict()}",
                )
            )
        _check_binding(report_data, expected, failures)
        measurements = {
            "measurement": report.measurement.hex(),
            "host_data": report.host_data.hex(),
            "id_key_digest": report.id_key_digest.hex(),
            "guest_svn": report.guest_svn,
            "policy": f"0x{report.policy:x}",
            "vmpl": report.vmpl,
            "debug": report.debug,
            "signing_key": result.signing_key,
            "product": result.product.value if result.product else "unknown",
        }
        if tcb is not None:
            measurements.update({f"reported_tcb.{k}": v for k, v in tcb.as_dict().items()})
    return Verdict(
        status=_status(failures, relaxations),
        tee="sev-snp",
        insecure=False,
        failures=tuple(failures),
        relaxations=tuple(relaxations),
        crypto_ok=crypto_ok,
        quote_version=result.report.version if result.report is not None else None,
        measurements=measurements,
        report_data=report_data,
        valid_until=result.valid_until,
        appraised_at=now,
    )


def _appraise_snp_guest(
    report: SnpReport, policy: AppraisalPolicy, failures: list[Failure], relaxations: list[str]
) -> None:
    """Guest policy bits, VMPL and launch measurement of an SNP guest."""
    if report.debug:
        if policy.allow_debug:
            relaxations.append("allow_debug")
        else:
            failures.append(Failure("debug", "the guest policy allows debugging (POLICY.DEBUG)"))
    if report.migrate_ma:
        if policy.snp_allow_migration_agent:
            relaxations.append("snp_allow_migration_agent")
        else:
            failures.append(Failure("migration_agent", "the guest policy allows a migration agent"))
    if not policy.snp_allow_smt and (report.smt_allowed or report.smt_enabled):
        failures.append(Failure("smt", "SMT is allowed by the guest policy or enabled"))
    if report.vmpl > policy.snp_max_vmpl:
        failures.append(
            Failure(
                "vmpl", f"report from VMPL {report.vmpl}, policy allows <= {policy.snp_max_vmpl}"
            )
        )
    if policy.snp_measurements:
        if report.measurement not in policy.snp_measurements:
            failures.append(Failure("measurement", "launch measurement is not in the allowlist"))
    elif policy.require_identity:
        failures.append(Failure("identity_policy", "the policy names no allowed SNP measurement"))
