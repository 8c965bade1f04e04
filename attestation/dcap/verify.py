"""Quote verification: runs every check it can and reports each failure by a stable name."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.dcap import certs, tcb
from attestation.dcap.collateral import Collateral, PreparedCollateral, prepare_collateral
from attestation.dcap.errors import CheckFailure, DerError, QuoteFormatError
from attestation.dcap.quote import INTEL_QE_VENDOR_ID, Quote, TdReport, parse_quote

# Failures that mean "the collateral is stale", not "the evidence is forged".
EXPIRY_CHECKS = frozenset({"tcb_info_expired", "qe_identity_expired", "crl_expired"})
_QE_REPORT_DATA_HASH_LEN = 32
_QE_IDENTITY_ID = {"sgx": "QE", "tdx": "TD_QE"}
_TCB_INFO_ID = {"sgx": "SGX", "tdx": "TDX"}


@dataclass(frozen=True, slots=True, kw_only=True)
class DcapVerdict:
    quote: Quote | None
    tee: str  # "sgx", "tdx", or "unknown" when the quote did not parse
    quote_version: int
    tcb_status: str  # Intel's TCB status, or "Unknown" (no collateral / not determinable)
    advisory_ids: tuple[str, ...]
    fmspc: str | None  # upper-case hex, from the PCK certificate
    failures: tuple[CheckFailure, ...]
    collateral_expired: bool
    trailing_bytes: int = 0  # unsigned bytes after the signature data, ignored
    # When this verdict goes stale: the first nextUpdate / notAfter of the collateral and the
    # PCK chain. Appraisals must be redone by then (the agent re-attests).
    valid_until: datetime | None = None

    @property
    def crypto_ok(self) -> bool:
        """Every check passed (signatures, chains, revocation, freshness, identities)."""
        return not self.failures


def verify_quote(
    quote: bytes | Quote,
    *,
    now: datetime,
    collateral: Collateral | PreparedCollateral | None = None,
    root_ca: x509.Certificate | None = None,
) -> DcapVerdict:
    """Verify a DCAP quote offline at time `now` (timezone-aware).

    Never raises for bad evidence or collateral: every failed check is listed in the verdict.
    Without collateral the quote signature, QE report signature and binding, and the PCK
    chain to the root are still checked, and the TCB status is "Unknown".
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    root = root_ca if root_ca is not None else certs.load_intel_root_ca()
    root_der = certs.der_bytes(root)
    failures: list[CheckFailure] = []
    prepared: PreparedCollateral | None = None
    try:
        prepared = _prepared(collateral, root, root_der)
        if prepared is not None:
            failures.extend(prepared.static_failures)
            failures.extend(prepared.time_failures(now))
    except Exception as exc:  # see below: report, never raise
        failures.append(CheckFailure("verification_error", f"{type(exc).__name__}: {exc}"))

    if isinstance(quote, Quote):
        q = quote
    else:
        try:
            q = parse_quote(quote)
        except QuoteFormatError as exc:
            failures.insert(0, CheckFailure("quote_format", str(exc)))
            raw = bytes(quote) if isinstance(quote, bytes | bytearray | memoryview) else b""
            return _verdict(None, "unknown", int.from_bytes(raw[:2], "little"), failures)

    status: str = tcb.UNKNOWN
    advisories: tuple[str, ...] = ()
    ext: certs.PckExtensions | None = None
    try:
        ext = _check_evidence(q, root, root_der, now, failures)
        if prepared is not None:
            _check_revocation(prepared, q, failures)
            status, advisories = _evaluate_tcb(q, prepared, ext, failures)
    except Exception as exc:  # the no-raise contract outranks surfacing a bug as a crash
        failures.append(CheckFailure("verification_error", f"{type(exc).__name__}: {exc}"))
    ends = [c.not_valid_after_utc for c in _chain_or_empty(q)]
    if prepared is not None and (collateral_end := prepared.valid_until()) is not None:
        ends.append(collateral_end)
    verdict = _verdict(
        q, q.tee_type, q.version, failures, status=status, advisories=advisories, ext=ext
    )
    return replace(verdict, valid_until=min(ends, default=None))


def _chain_or_empty(q: Quote) -> tuple[x509.Certificate, ...]:
    try:
        return _parse_chain_cached(q.pck_chain_pem)
    except certs.ChainError:
        return ()


def _check_evidence(
    q: Quote,
    root: x509.Certificate,
    root_der: bytes,
    now: datetime,
    failures: list[CheckFailure],
) -> certs.PckExtensions | None:
    """Checks needing no collateral; returns the PCK extensions when they could be read."""
    _check_quote(q, failures)
    pck_chain = _check_pck_chain(q, root, root_der, now, failures)
    if not pck_chain:
        failures.append(
            CheckFailure("qe_report_signature", "no usable PCK certificate to verify with")
        )
        return None
    _check_qe_report_signature(q, pck_chain[0], failures)
    try:
        return certs.parse_pck_extensions(pck_chain[0])
    except DerError as exc:
        failures.append(CheckFailure("pck_extension", str(exc)))
        return None


def _prepared(
    collateral: Collateral | PreparedCollateral | None, root: x509.Certificate, root_der: bytes
) -> PreparedCollateral | None:
    """Prepared collateral for `root`; re-prepared if it was prepared against another root."""
    if collateral is None:
        return None
    if isinstance(collateral, PreparedCollateral):
        if collateral.root_der == root_der:
            return collateral
        collateral = collateral.collateral
    return prepare_collateral(collateral, root)


def _verdict(
    q: Quote | None,
    tee: str,
    version: int,
    failures: list[CheckFailure],
    *,
    status: str = tcb.UNKNOWN,
    advisories: tuple[str, ...] = (),
    ext: certs.PckExtensions | None = None,
) -> DcapVerdict:
    return DcapVerdict(
        quote=q,
        tee=tee,
        quote_version=version,
        tcb_status=status,
        advisory_ids=advisories,
        fmspc=ext.fmspc.hex().upper() if ext is not None else None,
        failures=tuple(failures),
        collateral_expired=any(f.check in EXPIRY_CHECKS for f in failures),
        trailing_bytes=q.trailing_bytes if q is not None else 0,
    )


def _check_quote(q: Quote, failures: list[CheckFailure]) -> None:
    """Attestation-key signature over the quote and the key's binding to the QE report."""
    if q.qe_vendor_id != INTEL_QE_VENDOR_ID:
        failures.append(CheckFailure("qe_vendor", f"QE vendor {q.qe_vendor_id.hex()} is not Intel"))
    try:
        key = certs.p256_key_from_raw(q.attestation_key)
    except ValueError:
        failures.append(CheckFailure("quote_signature", "attestation key is not a P-256 point"))
    else:
        if not certs.verify_p256(key, q.signature, q.signed_region):
            failures.append(
                CheckFailure("quote_signature", "quote signature does not verify with its key")
            )
    # The QE vouches for the attestation key by putting SHA-256(key || QE auth data) into
    # the first half of its report data; the rest must be zero.
    expected = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest()
    report_data = q.qe_report.report_data
    if not hmac.compare_digest(report_data[:_QE_REPORT_DATA_HASH_LEN], expected) or any(
        report_data[_QE_REPORT_DATA_HASH_LEN:]
    ):
        failures.append(
            CheckFailure(
                "qe_report_binding",
                "QE report data is not SHA-256(attestation key || QE auth data) || zeros",
            )
        )


def _check_pck_chain(
    q: Quote,
    root: x509.Certificate,
    root_der: bytes,
    now: datetime,
    failures: list[CheckFailure],
) -> tuple[x509.Certificate, ...]:
    try:
        chain = _parse_chain_cached(q.pck_chain_pem)
    except certs.ChainError as exc:
        failures.append(CheckFailure("pck_chain", str(exc)))
        return ()
    failures.extend(
        CheckFailure("pck_chain", p) for p in _chain_problems_cached(chain, root, root_der)
    )
    failures.extend(
        CheckFailure("pck_chain_expired", p) for p in certs.validity_problems(chain, now)
    )
    return chain


def _check_qe_report_signature(
    q: Quote, leaf: x509.Certificate, failures: list[CheckFailure]
) -> None:
    try:
        key: ec.EllipticCurvePublicKey = certs.cert_p256_key(leaf)
    except certs.ChainError as exc:
        failures.append(CheckFailure("qe_report_signature", str(exc)))
        return
    if not certs.verify_p256(key, q.qe_report_signature, q.qe_report_raw):
        failures.append(
            CheckFailure("qe_report_signature", "QE report signature does not verify with PCK key")
        )


def _check_revocation(prepared: PreparedCollateral, q: Quote, failures: list[CheckFailure]) -> None:
    try:
        chain = _parse_chain_cached(q.pck_chain_pem)
    except certs.ChainError:
        return  # already reported as pck_chain
    if len(chain) < 2:
        return
    leaf, pck_ca = chain[0], chain[1]
    if prepared.root_ca_crl is not None:
        for cert in chain[1:]:
            if certs.is_revoked(prepared.root_ca_crl, cert):
                failures.append(
                    CheckFailure("pck_ca_revoked", f"PCK CA serial {cert.serial_number:x} revoked")
                )
    problem = prepared.pck_crl_problem(pck_ca)
    if problem is not None:
        failures.append(CheckFailure("pck_crl", problem))
    if prepared.pck_crl is not None and certs.is_revoked(prepared.pck_crl, leaf):
        failures.append(
            CheckFailure("pck_revoked", f"PCK certificate serial {leaf.serial_number:x} revoked")
        )


def _evaluate_tcb(
    q: Quote,
    prepared: PreparedCollateral,
    ext: certs.PckExtensions | None,
    failures: list[CheckFailure],
) -> tuple[str, tuple[str, ...]]:
    """Platform TCB level, converged with the TDX module's and the QE's; also identity checks."""
    status: str | None = None
    advisories: list[tuple[str, ...]] = []
    info = prepared.tcb_info
    if info is not None and ext is not None:
        status = _platform_status(q, info, ext, failures, advisories)
    qe_status = _qe_identity_status(q, prepared.qe_identity, failures, advisories)
    if status is None:
        return tcb.UNKNOWN, ()
    if qe_status is not None:
        status = tcb.converge(status, qe_status)
    return status, tcb.merge_advisories(*advisories)


def _platform_status(
    q: Quote,
    info: tcb.TcbInfo,
    ext: certs.PckExtensions,
    failures: list[CheckFailure],
    advisories: list[tuple[str, ...]],
) -> str | None:
    def fail(check: str, message: str) -> None:
        failures.append(CheckFailure(check, message))

    usable = True
    if info.id != _TCB_INFO_ID[q.tee_type] or (q.tee_type == "tdx" and info.version < 3):
        fail("tcb_info_mismatch", f"TCB info {info.id} v{info.version} is not for {q.tee_type}")
        usable = False
    if info.fmspc != ext.fmspc:
        fail("fmspc_mismatch", f"PCK FMSPC {ext.fmspc.hex()} != TCB info {info.fmspc.hex()}")
        usable = False
    if info.pce_id != ext.pce_id:
        fail("pceid_mismatch", f"PCK PCE-ID {ext.pce_id.hex()} != TCB info {info.pce_id.hex()}")
        usable = False
    if not usable:
        return None
    td = q.body if isinstance(q.body, TdReport) else None
    tee_tcb_svn = td.tee_tcb_svn if td is not None else None
    level = tcb.match_platform_level(info, ext.tcb_components, ext.pce_svn, tee_tcb_svn)
    if level is None:
        fail("tcb_level_not_found", "platform TCB is below every level in the TCB info")
        return None
    status = level.status
    advisories.append(level.advisory_ids)
    if td is not None:
        status = _tdx_module_status(td, info, status, failures, advisories)
    return status


def _tdx_module_status(
    td: TdReport,
    info: tcb.TcbInfo,
    status: str,
    failures: list[CheckFailure],
    advisories: list[tuple[str, ...]],
) -> str:
    module = tcb.tdx_module_identity(info, td.tee_tcb_svn)
    version = td.tee_tcb_svn[tcb.TDX_MODULE_VERSION_INDEX]
    if module is None:
        failures.append(
            CheckFailure(
                "tdx_module_mismatch", f"TCB info has no identity for TDX module v{version}"
            )
        )
        return status
    if module.mr_signer != td.mr_signer_seam or not tcb.masked_equal(
        td.seam_attributes, module.attributes_mask, module.attributes
    ):
        failures.append(
            CheckFailure(
                "tdx_module_mismatch", "MRSIGNERSEAM/SEAMATTRIBUTES differ from the TDX module"
            )
        )
    if version == 0:
        return status
    level = tcb.match_isv_level(module.levels, td.tee_tcb_svn[tcb.TDX_MODULE_SVN_INDEX])
    if level is None:
        failures.append(
            CheckFailure("tcb_level_not_found", f"TDX module {module.id} SVN below every level")
        )
        return status
    advisories.append(level.advisory_ids)
    return tcb.converge(status, level.status)


def _qe_identity_status(
    q: Quote,
    identity: tcb.QeIdentity | None,
    failures: list[CheckFailure],
    advisories: list[tuple[str, ...]],
) -> str | None:
    if identity is None:
        return None
    qe = q.qe_report
    problems: list[str] = []
    if identity.id != _QE_IDENTITY_ID[q.tee_type]:
        problems.append(f"identity {identity.id} is not for a {q.tee_type} quote")
    if qe.mr_signer != identity.mr_signer:
        problems.append("MRSIGNER differs")
    if qe.isv_prod_id != identity.isv_prod_id:
        problems.append(f"ISVPRODID {qe.isv_prod_id} != {identity.isv_prod_id}")
    if qe.misc_select & identity.misc_select_mask != identity.misc_select & (
        identity.misc_select_mask
    ):
        problems.append("masked MISCSELECT differs")
    if not tcb.masked_equal(qe.attributes, identity.attributes_mask, identity.attributes):
        problems.append("masked ATTRIBUTES differ")
    failures.extend(CheckFailure("qe_identity_mismatch", f"QE {p}") for p in problems)
    level = tcb.match_isv_level(identity.levels, qe.isv_svn)
    if level is None:
        failures.append(
            CheckFailure("tcb_level_not_found", f"QE ISVSVN {qe.isv_svn} below every level")
        )
        return None
    advisories.append(level.advisory_ids)
    return level.status


# Parsing and checking the PCK chain is pure in its inputs and the same few chains recur
# (one per platform), so memoise both; bounded so hostile input cannot grow memory.
_CHAIN_CACHE_SIZE = 64
_chain_cache: dict[bytes, tuple[x509.Certificate, ...]] = {}
_problem_cache: dict[tuple[bytes, bytes], tuple[str, ...]] = {}


def _parse_chain_cached(pem: bytes) -> tuple[x509.Certificate, ...]:
    chain = _chain_cache.get(pem)
    if chain is None:
        chain = certs.parse_pem_chain(pem)
        if len(_chain_cache) >= _CHAIN_CACHE_SIZE:
            _chain_cache.clear()
        _chain_cache[pem] = chain
    return chain


def _chain_problems_cached(
    chain: tuple[x509.Certificate, ...], root: x509.Certificate, root_der: bytes
) -> tuple[str, ...]:
    key = (b"".join(certs.der_bytes(c) for c in chain), root_der)
    problems = _problem_cache.get(key)
    if problems is None:
        problems = tuple(certs.chain_problems(chain, root, root_der))
        if len(_problem_cache) >= _CHAIN_CACHE_SIZE:
            _problem_cache.clear()
        _problem_cache[key] = problems
    return problems
