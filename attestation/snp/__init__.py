"""Offline AMD SEV-SNP report verification (reports v2/v3), pure Python + pyca.

- ``report.py``  the ATTESTATION_REPORT layout and `parse_report`; TCB_VERSION per product
- ``certs.py``   pinned ARKs (Milan, Genoa, Turin), RSA-PSS links, VCEK/VLEK extensions, CRLs
- ``verify.py``  `verify_report` and `SnpVerdict`
- ``kds.py``     fetching VCEK/VLEK, chains and CRLs from AMD KDS, cached on disk (async,
                 separate from verification, as ``attestation/pccs.py`` is for DCAP)
- ``errors.py``  exceptions

`verify_report` takes "now" as an input, trusts only the pinned ARKs (or one passed in),
never fetches anything and never raises for bad evidence. Failure names:

report_format       not a v2/v3 report of 1,184 bytes with ECDSA P-384 (nothing else checked)
signing_key         the report names no usable key, or the certificate is of the other kind
vcek_missing        no VCEK/VLEK certificate was given
report_signature    ECDSA P-384 / SHA-384 over bytes 0..0x29F does not verify
cert_chain          a certificate unparsable, a link not RSA-PSS-signed by its issuer, or the
                    root not a pinned ARK (so a chain of another product fails here)
cert_expired        VCEK/VLEK, ASK/ASVK or ARK outside its validity at `now`
crl, crl_expired    the CRL malformed or not signed by the ARK; outside its validity
cert_revoked        the ASK/ASVK or the key is on the CRL
tcb_mismatch        the key's TCB extensions differ from the report's REPORTED_TCB
chip_id_mismatch    a VCEK's hwID differs from the report's CHIP_ID
product_mismatch    the report's CPUID or the key's productName names another product
verification_error  an unexpected exception inside a check (a bug; reported, never raised)

Judging measurements, guest policy bits, minimum TCB, VMPL and REPORT_DATA is policy, left
to the caller (`attestation.policy`).
"""

from attestation.snp.certs import KeyExtensions, key_extensions, pinned_products
from attestation.snp.errors import CertificateError, KdsError, ReportFormatError
from attestation.snp.report import (
    Product,
    SigningKey,
    SnpReport,
    TcbVersion,
    looks_like_snp_report,
    parse_report,
)
from attestation.snp.verify import SnpVerdict, verify_report

__all__ = [
    "CertificateError",
    "KdsError",
    "KeyExtensions",
    "Product",
    "ReportFormatError",
    "SigningKey",
    "SnpReport",
    "SnpVerdict",
    "TcbVersion",
    "key_extensions",
    "looks_like_snp_report",
    "parse_report",
    "pinned_products",
    "verify_report",
]
