"""The simulated attester: development only, INSECURE, and always labelled so."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from attestation.evidence import SimulatedEvidence


def code_measurement(
    packages: tuple[str, ...] = ("cloud_hub", "attestation", "escalade_protocol"),
) -> bytes:
    """SHA-256 over the hub's Python sources, in a stable order.

    A stand-in for MRENCLAVE: it changes when the code changes, but nothing vouches for it.
    """
    digest = hashlib.sha256()
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(b"\x00")
            digest.update(path.read_bytes())
    return digest.digest()


class SimulatedAttester:
    def __init__(self, measurement: bytes) -> None:
        self.measurement = measurement

    def evidence(self, report_data: bytes) -> SimulatedEvidence:
        return SimulatedEvidence(measurement=self.measurement, report_data=report_data)
