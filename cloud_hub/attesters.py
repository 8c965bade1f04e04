"""The hub's attesters: who produces the evidence that binds the hub's keys.

- `DcapAttester`: inside a Gramine SGX enclave, a DCAP quote from `/dev/attestation`, passed on
  with Intel's collateral (signed by Intel, so the hub may carry it) when the operator gave it.
- `SimulatedAttester`: development only, INSECURE, and only when explicitly allowed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

from attestation import DcapCollateral, DcapEvidence, Evidence, SimulatedAttester, code_measurement
from attestation.gramine import GramineAttester, NoAttestationError
from cloud_hub.config import HubConfig
from cloud_hub.errors import HubError, NoTeeError

log = logging.getLogger("cloud_hub")


class Attester(Protocol):
    def evidence(self, report_data: bytes) -> Evidence: ...


class DcapAttester:
    def __init__(self, gramine: GramineAttester, collateral: DcapCollateral | None) -> None:
        self._gramine = gramine
        self._collateral = collateral

    def evidence(self, report_data: bytes) -> DcapEvidence:
        return DcapEvidence(quote=self._gramine.quote(report_data), collateral=self._collateral)


def load_collateral(path: Path) -> DcapCollateral:
    try:
        return DcapCollateral.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot load DCAP collateral {path}: {exc}") from None


def make_attester(config: HubConfig) -> Attester:
    if config.allow_simulated_tee:
        log.warning("SIMULATED TEE: attestation evidence is INSECURE and proves nothing")
        return SimulatedAttester(code_measurement())
    try:
        gramine = GramineAttester.open(config.attestation_dir)
    except NoAttestationError as exc:
        raise NoTeeError(
            f"{exc}. Run the hub inside Gramine-SGX with remote attestation (docs/enclave.md), "
            "or start it with --allow-simulated-tee for INSECURE development use"
        ) from None
    collateral = load_collateral(config.collateral_file) if config.collateral_file else None
    if collateral is None:
        log.warning("no DCAP collateral configured: agents must hold their own to appraise TCB")
    log.info("attesting with Gramine (%s), DCAP quotes", gramine.attestation_type)
    return DcapAttester(gramine, collateral)
