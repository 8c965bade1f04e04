"""Verification collateral: the raw fields (`Collateral`) and a parsed, pre-checked form.

`PreparedCollateral` parses every certificate, CRL and JSON document once and runs the checks
that depend only on the collateral and the trusted root (signatures, chains); the checks that
depend on "now" or on the quote are re-run on every verification. `verify_quote` prepares
collateral through a small cache, so handing it the same `Collateral` repeatedly is cheap.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.dcap import certs
from attestation.dcap.errors import CheckFailure, CollateralFormatError
from attestation.dcap.tcb import QeIdentity, TcbInfo, parse_qe_identity, parse_tcb_info

_SIGNATURE_LEN = 64
_PEM_CRL_PREFIX = "-----BEGIN X509 CRL-----"
_Fail = Callable[[str, str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Collateral:
    """Collateral for one quote, as a PCCS / Intel PCS serves it.

    Binary fields hold decoded bytes (CRLs as DER, signatures as raw r||s); `tcb_info` and
    `qe_identity` keep the exact JSON text, because the signatures cover those bytes.
    """

    pck_crl: bytes
    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    tcb_info: str
    tcb_info_signature: bytes
    tcb_info_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes
    qe_identity_issuer_chain: str

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Collateral:
        """Build from the dcap-qvl / sample JSON shape (hex DER CRLs, hex signatures).

        CRLs may also be given as PEM text or raw bytes, signatures as raw bytes.
        Raises `CollateralFormatError` naming the first missing or malformed field.
        """
        if not isinstance(obj, Mapping):
            raise CollateralFormatError("collateral must be a JSON object")
        missing = [f.name for f in fields(cls) if f.name not in obj]
        if missing:
            raise CollateralFormatError(f"collateral lacks {', '.join(missing)}")
        return cls(
            pck_crl=_crl(obj, "pck_crl"),
            pck_crl_issuer_chain=_text(obj, "pck_crl_issuer_chain"),
            root_ca_crl=_crl(obj, "root_ca_crl"),
            tcb_info=_text(obj, "tcb_info"),
            tcb_info_signature=_signature(obj, "tcb_info_signature"),
            tcb_info_issuer_chain=_text(obj, "tcb_info_issuer_chain"),
            qe_identity=_text(obj, "qe_identity"),
            qe_identity_signature=_signature(obj, "qe_identity_signature"),
            qe_identity_issuer_chain=_text(obj, "qe_identity_issuer_chain"),
        )


@dataclass(frozen=True, slots=True, eq=False)
class PreparedCollateral:
    """Parsed collateral plus the outcome of its quote- and time-independent checks."""

    collateral: Collateral
    root_der: bytes
    tcb_info: TcbInfo | None
    qe_identity: QeIdentity | None
    pck_crl: x509.CertificateRevocationList | None
    root_ca_crl: x509.CertificateRevocationList | None
    pck_crl_chain: tuple[x509.Certificate, ...]
    tcb_info_chain: tuple[x509.Certificate, ...]
    qe_identity_chain: tuple[x509.Certificate, ...]
    static_failures: tuple[CheckFailure, ...]
    # PCK CA DER -> problem with the PCK CRL under that CA (None: fine). Quotes from one
    # platform family share their CA, so this is computed once per CA, not per quote.
    _pck_crl_problems: dict[bytes, str | None] = field(default_factory=dict, repr=False)
    _valid_until: datetime | None = field(init=False, default=None, repr=False)

    def time_failures(self, now: datetime) -> list[CheckFailure]:
        """Freshness of TCB info, QE identity, both CRLs and the collateral signing chains."""
        out: list[CheckFailure] = []
        for name, doc, chain in (
            ("tcb_info", self.tcb_info, self.tcb_info_chain),
            ("qe_identity", self.qe_identity, self.qe_identity_chain),
        ):
            if doc is not None and not doc.issue_date <= now <= doc.next_update:
                out.append(
                    CheckFailure(
                        f"{name}_expired",
                        f"{name} is valid {doc.issue_date:%Y-%m-%dT%H:%M:%SZ} to "
                        f"{doc.next_update:%Y-%m-%dT%H:%M:%SZ}, not at {now:%Y-%m-%dT%H:%M:%SZ}",
                    )
                )
            out.extend(
                CheckFailure(f"{name}_expired", f"{name} signing chain: {p}")
                for p in certs.validity_problems(chain, now)
            )
        for crl_name, crl in (("pck_crl", self.pck_crl), ("root_ca_crl", self.root_ca_crl)):
            if crl is not None:
                problem = certs.crl_validity_problem(crl, now, crl_name)
                if problem is not None:
                    out.append(CheckFailure("crl_expired", problem))
        out.extend(
            CheckFailure("crl_expired", f"pck_crl issuer chain: {p}")
            for p in certs.validity_problems(self.pck_crl_chain, now)
        )
        return out

    def valid_until(self) -> datetime | None:
        """When the first of these documents or signing certificates goes stale."""
        return self._valid_until

    def __post_init__(self) -> None:
        ends = [doc.next_update for doc in (self.tcb_info, self.qe_identity) if doc is not None]
        ends += [
            crl.next_update_utc
            for crl in (self.pck_crl, self.root_ca_crl)
            if crl is not None and crl.next_update_utc is not None
        ]
        chains = (*self.tcb_info_chain, *self.qe_identity_chain, *self.pck_crl_chain)
        ends += [cert.not_valid_after_utc for cert in chains]
        # Frozen, and verification is hot: compute once (object.__setattr__ is the dataclass way).
        object.__setattr__(self, "_valid_until", min(ends, default=None))

    def pck_crl_problem(self, pck_ca: x509.Certificate) -> str | None:
        """Whether the PCK CRL is issued and signed by `pck_ca` (the quote's PCK issuer)."""
        if self.pck_crl is None:
            return "PCK CRL unavailable"
        key = certs.der_bytes(pck_ca)
        if key not in self._pck_crl_problems:
            self._pck_crl_problems[key] = certs.crl_signature_problem(self.pck_crl, pck_ca)
        return self._pck_crl_problems[key]


def prepare_collateral(
    collateral: Collateral, root_ca: x509.Certificate | None = None
) -> PreparedCollateral:
    """Parse and pre-check `collateral` against `root_ca` (default: the pinned Intel root)."""
    root = root_ca if root_ca is not None else certs.load_intel_root_ca()
    return _prepare_cached(collateral, certs.der_bytes(root))


@lru_cache(maxsize=16)
def _prepare_cached(collateral: Collateral, root_der: bytes) -> PreparedCollateral:
    return _prepare(collateral, root_der)


def _prepare(c: Collateral, root_der: bytes) -> PreparedCollateral:
    root = x509.load_der_x509_certificate(root_der)
    failures: list[CheckFailure] = []

    def fail(check: str, message: str) -> None:
        failures.append(CheckFailure(check, message))

    root_ca_crl = _load_crl(c.root_ca_crl, "root_ca_crl", fail)
    pck_crl = _load_crl(c.pck_crl, "pck_crl", fail)
    if root_ca_crl is not None:
        problem = certs.crl_signature_problem(root_ca_crl, root)
        if problem is not None:
            fail("root_ca_crl", problem)

    pck_crl_chain = _load_chain(c.pck_crl_issuer_chain, "pck_crl", fail)
    for problem in certs.chain_problems(pck_crl_chain, root, root_der) if pck_crl_chain else ():
        fail("pck_crl", f"pck_crl issuer chain: {problem}")

    tcb_info_chain = _load_chain(c.tcb_info_issuer_chain, "tcb_info_chain", fail)
    qe_identity_chain = _load_chain(c.qe_identity_issuer_chain, "qe_identity_chain", fail)
    tcb_info: TcbInfo | None = None
    qe_identity: QeIdentity | None = None
    try:
        tcb_info = parse_tcb_info(c.tcb_info)
    except CollateralFormatError as exc:
        fail("collateral_format", f"tcb_info: {exc}")
    try:
        qe_identity = parse_qe_identity(c.qe_identity)
    except CollateralFormatError as exc:
        fail("collateral_format", f"qe_identity: {exc}")

    for name, chain, text, signature in (
        ("tcb_info", tcb_info_chain, c.tcb_info, c.tcb_info_signature),
        ("qe_identity", qe_identity_chain, c.qe_identity, c.qe_identity_signature),
    ):
        _check_signed_document(
            name,
            chain,
            text,
            signature,
            root=root,
            root_der=root_der,
            root_ca_crl=root_ca_crl,
            fail=fail,
        )

    return PreparedCollateral(
        collateral=c,
        root_der=root_der,
        tcb_info=tcb_info,
        qe_identity=qe_identity,
        pck_crl=pck_crl,
        root_ca_crl=root_ca_crl,
        pck_crl_chain=pck_crl_chain,
        tcb_info_chain=tcb_info_chain,
        qe_identity_chain=qe_identity_chain,
        static_failures=tuple(failures),
    )


def _check_signed_document(
    name: str,
    chain: tuple[x509.Certificate, ...],
    text: str,
    signature: bytes,
    *,
    root: x509.Certificate,
    root_der: bytes,
    root_ca_crl: x509.CertificateRevocationList | None,
    fail: _Fail,
) -> None:
    """TCB info / QE identity: signing chain to the root, root-CRL status, signature."""
    if not chain:
        fail(f"{name}_signature", f"no signing certificate to check {name} with")
        return
    for problem in certs.chain_problems(chain, root, root_der):
        fail(f"{name}_chain", problem)
    if root_ca_crl is not None:
        for cert in chain:
            if certs.der_bytes(cert) != root_der and certs.is_revoked(root_ca_crl, cert):
                fail(f"{name}_chain", f"serial {cert.serial_number:x} is revoked by the root CRL")
    try:
        key = certs.cert_p256_key(chain[0])
    except certs.ChainError as exc:
        fail(f"{name}_signature", str(exc))
        return
    # Intel signs the exact JSON text it serves, so verify those bytes, never a re-encoding.
    if not certs.verify_p256(key, signature, text.encode()):
        fail(f"{name}_signature", f"{name} signature does not verify with its signing cert")


def _load_crl(der_bytes: bytes, name: str, fail: _Fail) -> x509.CertificateRevocationList | None:
    try:
        return certs.load_crl(der_bytes)
    except ValueError as exc:
        fail("collateral_format", f"{name}: not a DER CRL: {exc}")
        return None


def _load_chain(pem: str, check: str, fail: _Fail) -> tuple[x509.Certificate, ...]:
    try:
        return certs.parse_pem_chain(pem.encode())
    except (certs.ChainError, UnicodeEncodeError) as exc:
        fail(check, f"issuer chain unusable: {exc}")
        return ()


# --- from_json field decoders ---


def _text(obj: Mapping[str, object], key: str) -> str:
    value = obj[key]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise CollateralFormatError(f"'{key}' is not UTF-8 text") from None
    if not isinstance(value, str):
        raise CollateralFormatError(f"'{key}' must be a string, not {type(value).__name__}")
    return value


def _crl(obj: Mapping[str, object], key: str) -> bytes:
    value = obj[key]
    if isinstance(value, bytes):
        return value
    text = _text(obj, key).strip()
    if text.startswith(_PEM_CRL_PREFIX):
        try:
            crl = x509.load_pem_x509_crl(text.encode())
        except ValueError as exc:
            raise CollateralFormatError(f"'{key}' is not a PEM CRL: {exc}") from None
        return crl.public_bytes(Encoding.DER)
    return _unhex(text, key)


def _signature(obj: Mapping[str, object], key: str) -> bytes:
    value = obj[key]
    raw = value if isinstance(value, bytes) else _unhex(_text(obj, key), key)
    if len(raw) != _SIGNATURE_LEN:
        raise CollateralFormatError(f"'{key}' must be {_SIGNATURE_LEN} bytes (raw r||s)")
    return raw


def _unhex(text: str, key: str) -> bytes:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise CollateralFormatError(f"'{key}' must be hex") from None
