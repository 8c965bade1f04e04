"""The attester inside a Gramine SGX enclave: quotes through ``/dev/attestation``.

Gramine exposes the enclave's attestation to the application as pseudo-files:

* ``attestation_type``: ``"none"``, ``"epid"`` or ``"dcap"`` (from ``sgx.remote_attestation``
  in the manifest; ``"none"`` also outside SGX, e.g. under ``gramine-direct``);
* ``user_report_data``: write the 64 bytes to place in the REPORT_DATA of the next quote;
* ``quote``: read the quote over the enclave's report with that REPORT_DATA (with DCAP, an
  SGX ECDSA quote, version 3, produced by the platform's Quoting Enclave).

Writing the report data and reading the quote are two operations on shared, process-wide state,
so a lock keeps the pair together: two requests that interleave would otherwise each get a quote
over the other's report data.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Final

from attestation.binding import REPORT_DATA_SIZE

ATTESTATION_DIR: Final = Path("/dev/attestation")
SUPPORTED_TYPE: Final = "dcap"


class GramineError(Exception):
    """Gramine's attestation interface is unusable or answered something unexpected."""


class NoAttestationError(GramineError):
    """This process is not in an SGX enclave with remote attestation enabled."""


class GramineAttester:
    """Produces DCAP quotes over caller-chosen REPORT_DATA, from inside a Gramine enclave.

    Use `GramineAttester.open()` at start-up: it refuses to build an attester where no
    attestation is available. The constructor trusts its arguments (it reads nothing).
    """

    def __init__(
        self, directory: Path = ATTESTATION_DIR, *, attestation_type: str = SUPPORTED_TYPE
    ) -> None:
        self.directory = directory
        self.attestation_type = attestation_type
        self._lock = threading.Lock()

    @classmethod
    def open(cls, directory: Path = ATTESTATION_DIR) -> GramineAttester:
        """Check that Gramine offers DCAP attestation here, and return an attester for it."""
        type_file = directory / "attestation_type"
        try:
            attestation_type = type_file.read_text(encoding="ascii").strip()
        except FileNotFoundError as exc:
            raise NoAttestationError(
                f"{type_file} does not exist: this process is not running inside a Gramine "
                "SGX enclave; refusing to start as an attested hub (run the hub under "
                "gramine-sgx, see docs/enclave.md)"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise GramineError(f"cannot read {type_file}: {exc}") from exc
        if attestation_type == "none":
            raise NoAttestationError(
                f"{type_file} says 'none': Gramine runs without remote attestation (not under "
                'SGX, or the manifest lacks sgx.remote_attestation = "dcap"); refusing to '
                "start as an attested hub"
            )
        if attestation_type == "epid":
            raise GramineError(
                "Gramine offers EPID attestation, which Escalade does not support (Intel has "
                'retired the EPID attestation service); set sgx.remote_attestation = "dcap" '
                "in the manifest"
            )
        if attestation_type != SUPPORTED_TYPE:
            raise GramineError(
                f"{type_file} names an unknown attestation type {attestation_type!r}; "
                f"expected {SUPPORTED_TYPE!r}"
            )
        return cls(directory, attestation_type=attestation_type)

    def quote(self, report_data: bytes) -> bytes:
        """The enclave's quote with exactly these 64 bytes of REPORT_DATA. Thread-safe."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError(
                f"report_data must be exactly {REPORT_DATA_SIZE} bytes, got {len(report_data)}"
            )
        user_report_data = self.directory / "user_report_data"
        quote_file = self.directory / "quote"
        with self._lock:
            try:
                # Unbuffered: exactly one write() of the 64 bytes, as Gramine expects.
                with user_report_data.open("wb", buffering=0) as sink:
                    written = sink.write(report_data)
                if written != REPORT_DATA_SIZE:
                    raise GramineError(
                        f"short write to {user_report_data}: {written} of {REPORT_DATA_SIZE} bytes"
                    )
                with quote_file.open("rb") as source:
                    quote = source.read()
            except OSError as exc:
                raise GramineError(f"Gramine could not produce a quote: {exc}") from exc
        if not quote:
            raise GramineError(f"{quote_file} returned an empty quote")
        return quote
