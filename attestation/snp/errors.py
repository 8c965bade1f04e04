"""Exceptions for malformed SNP inputs; verdicts list failures as `CheckFailure` (shared
with the DCAP verifier, so one verdict shape serves every TEE).

    ValueError
    ├── ReportFormatError    the bytes are not an SNP attestation report v2/v3
    └── CertificateError     a VCEK/VLEK/ASK/ARK/CRL does not parse
    KdsError                 AMD's key distribution service unreachable or answered nonsense
"""

from __future__ import annotations

from attestation.dcap.errors import CheckFailure


class ReportFormatError(ValueError):
    """The bytes do not follow the SEV-SNP ATTESTATION_REPORT layout."""


class CertificateError(ValueError):
    """An AMD certificate or CRL is malformed."""


class KdsError(Exception):
    """Certificates could not be fetched from AMD KDS (or read from the offline directory)."""


__all__ = ["CertificateError", "CheckFailure", "KdsError", "ReportFormatError"]
