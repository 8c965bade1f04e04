"""SNP report verification: every check the inputs allow, each failure under a stable name."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation.dcap.certs import validity_problems
from attestation.snp import certs
from attestation.snp.errors import CertificateError, CheckFailure, ReportFormatError
from attestation.snp.report import Product, SigningKey, SnpReport, TcbVersion, parse_report

EXPIRY_CHECKS = frozenset({"cert_expired", "crl_expired"})
_Fail = Callable[[str, str], None]  # records one failed check
_KEY_CN = {SigningKey.VCEK: "SEV-VCEK", SigningKey.VLEK: "SEV-VLEK"}


@dataclass(frozen=True, slots=True, kw_only=True)
class SnpVerdict:
    report: SnpReport | None
    product: Product | None  # from the chain's ARK
    signing_key: str  # "vcek", "vlek", or what the report claimed
    reported_tcb: TcbVersion | None
    failures: tuple[CheckFailure, ...]
    # The first notAfter of the key and its chain, or the CRL's nextUpdate: re-appraise by then.
    valid_until: datetime | None = None

    @property
    def crypto_ok(self) -> bool:
        return not self.failures

    @property
    def collateral_expired(self) -> bool:
        return any(f.check in EXPIRY_CHECKS for f in self.failures)


def verify_report(
    report: bytes | SnpReport,
    *,
    now: datetime,
    vcek: bytes | x509.Certificate | None,
    chain: bytes | Sequence[x509.Certificate] | None = None,
    crl: bytes | x509.CertificateRevocationList | None = None,
    ark: x509.Certificate | None = None,
) -> SnpVerdict:
    """Verify an SNP report offline at `now` (timezone-aware); never raises for bad input.

    `vcek` is the VCEK or VLEK (DER or PEM) the report names; `chain` the ASK/ASVK and ARK
    (PEM), by default AMD's shipped ones for the key's product; `crl` AMD's CRL for that
    product; `ark` replaces the pinned ARKs (test hierarchies only).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    failures: list[CheckFailure] = []
    try:
        parsed = report if isinstance(report, SnpReport) else parse_report(report)
    except ReportFormatError as exc:
        return SnpVerdict(
            report=None,
            product=None,
            signing_key="unknown",
            reported_tcb=None,
            failures=(CheckFailure("report_format", str(exc)),),
        )
    product: Product | None = None
    ends: list[datetime] = []
    try:
        product = _check(parsed, now, vcek, chain, crl, ark, failures, ends)
    except Exception as exc:  # the no-raise contract outranks surfacing a bug as a crash
        failures.append(CheckFailure("verification_error", f"{type(exc).__name__}: {exc}"))
    key_name = (
        SigningKey(parsed.signing_key).name.lower()
        if parsed.signing_key in {k.value for k in SigningKey}
        else str(parsed.signing_key)
    )
    return SnpVerdict(
        report=parsed,
        product=product,
        signing_key=key_name,
        reported_tcb=parsed.reported_tcb(product or parsed.product_from_cpuid),
        failures=tuple(failures),
        valid_until=min(ends, default=None),
    )


def _check(  # noqa: PLR0917 - private, one call site, mirrors verify_report
    report: SnpReport,
    now: datetime,
    vcek: bytes | x509.Certificate | None,
    chain: bytes | Sequence[x509.Certificate] | None,
    crl: bytes | x509.CertificateRevocationList | None,
    ark: x509.Certificate | None,
    failures: list[CheckFailure],
    ends: list[datetime],
) -> Product | None:
    def fail(check: str, message: str) -> None:
        failures.append(CheckFailure(check, message))

    if report.signing_key not in (SigningKey.VCEK, SigningKey.VLEK):
        fail("signing_key", f"report signing key {report.signing_key} is neither VCEK nor VLEK")
        return None
    kind = SigningKey(report.signing_key)
    if vcek is None:
        fail("vcek_missing", f"no {kind.name} certificate to verify the report with")
        return None
    try:
        leaf = vcek if isinstance(vcek, x509.Certificate) else certs.load_certificate(vcek, "VCEK")
    except CertificateError as exc:
        fail("cert_chain", str(exc))
        return None
    if certs.common_name(leaf.subject) != _KEY_CN[kind]:
        cn = certs.common_name(leaf.subject)
        fail("signing_key", f"report is signed by its {kind.name}, certificate is {cn}")
    _check_signature(report, leaf, fail)
    product, intermediate, root = _chain(leaf, chain, ark, fail)
    if intermediate is not None and root is not None:
        for child, issuer in ((leaf, intermediate), (intermediate, root), (root, root)):
            problem = certs.link_problem(child, issuer)
            if problem is not None:
                fail("cert_chain", problem)
        for problem in validity_problems((leaf, intermediate, root), now):
            fail("cert_expired", problem)
        ends.extend(c.not_valid_after_utc for c in (leaf, intermediate, root))
        if crl is not None:
            crl_end = _check_crl(crl, root, (leaf, intermediate), now, fail)
            if crl_end is not None:
                ends.append(crl_end)
    if product is not None:
        cpu = report.product_from_cpuid
        if cpu is not None and cpu is not product:
            fail("product_mismatch", f"report CPUID says {cpu.value}, chain is {product.value}")
    _check_extensions(report, leaf, kind, product, fail)
    return product


def _check_signature(report: SnpReport, leaf: x509.Certificate, fail: _Fail) -> None:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        fail("report_signature", "the certificate does not hold an ECDSA P-384 key")
        return
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed_region, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        fail("report_signature", "report signature does not verify with the certificate's key")


def _chain(
    leaf: x509.Certificate,
    chain: bytes | Sequence[x509.Certificate] | None,
    ark: x509.Certificate | None,
    fail: _Fail,
) -> tuple[Product | None, x509.Certificate | None, x509.Certificate | None]:
    """Pick (product, intermediate, root) for `leaf`; the root must be a pinned ARK."""
    if chain is None and ark is None:
        issuer_cn = certs.common_name(leaf.issuer)
        for pc in certs.pinned_products().values():
            for inter in (pc.ask, pc.asvk):
                if certs.common_name(inter.subject) == issuer_cn:
                    return pc.product, inter, pc.ark
        fail("cert_chain", f"no pinned AMD intermediate is named {issuer_cn!r}")
        return None, None, None
    try:
        given = (
            certs.load_pem_chain(chain, "certificate chain")
            if isinstance(chain, bytes)
            else tuple(chain or ())
        )
    except CertificateError as exc:
        fail("cert_chain", str(exc))
        return None, None, None
    roots = [c for c in given if c.subject == c.issuer]
    inters = [c for c in given if c.subject != c.issuer]
    if ark is not None and not roots:
        roots = [ark]
    if len(roots) != 1 or not inters:
        fail("cert_chain", "the chain must hold one ARK and an ASK or ASVK")
        return None, None, None
    root = roots[0]
    trusted: dict[bytes, Product | None] = {
        certs.der(pc.ark): pc.product for pc in certs.pinned_products().values()
    }
    if ark is not None:
        trusted = {certs.der(ark): _product_named(certs.common_name(ark.subject))}
    product = trusted.get(certs.der(root))
    if certs.der(root) not in trusted:
        fail("cert_chain", f"{certs.common_name(root.subject)} is not a pinned AMD root")
    by_name = [c for c in inters if c.subject == leaf.issuer]
    return product, (by_name or inters)[0], root


def _product_named(cn: str) -> Product | None:
    for product in Product:
        if cn.endswith(product.value):
            return product
    return None


def _check_crl(
    crl: bytes | x509.CertificateRevocationList,
    root: x509.Certificate,
    covered: tuple[x509.Certificate, ...],
    now: datetime,
    fail: _Fail,
) -> datetime | None:
    """Check the CRL; return its nextUpdate when it is usable."""
    try:
        parsed = crl if isinstance(crl, x509.CertificateRevocationList) else certs.load_crl(crl)
    except CertificateError as exc:
        fail("crl", str(exc))
        return None
    problem = certs.crl_problem(parsed, root)
    if problem is not None:
        fail("crl", problem)
        return None
    next_update = parsed.next_update_utc
    if now < parsed.last_update_utc or (next_update is not None and now > next_update):
        fail("crl_expired", f"CRL valid until {next_update}, not at {now:%Y-%m-%d %H:%M}")
    for cert in covered:
        if parsed.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            fail("cert_revoked", f"{certs.common_name(cert.subject)} is revoked")
    return next_update


def _check_extensions(
    report: SnpReport,
    leaf: x509.Certificate,
    kind: SigningKey,
    product: Product | None,
    fail: _Fail,
) -> None:
    """The key was issued for exactly the reported TCB (and, for a VCEK, this chip)."""
    try:
        ext = certs.key_extensions(leaf, product)
    except CertificateError as exc:
        fail("tcb_mismatch", str(exc))
        return
    reported = report.reported_tcb(product)
    if ext.tcb != reported:
        fail(
            "tcb_mismatch", f"certificate TCB {ext.tcb.as_dict()} != reported {reported.as_dict()}"
        )
    if product is not None and ext.product_name and not ext.product_name.startswith(product.value):
        fail("product_mismatch", f"certificate is for {ext.product_name}, chain is {product.value}")
    if (
        kind is SigningKey.VCEK
        and not report.mask_chip_key
        and (ext.hwid is None or not hmac.compare_digest(ext.hwid, report.chip_id))
    ):
        fail("chip_id_mismatch", "the VCEK was issued for another chip")
