"""The hub's attesters: who produces the evidence that binds the hub's keys.

- `DcapAttester`: inside a Gramine SGX enclave, a DCAP quote from `/dev/attestation`, passed on
  with Intel's collateral (signed by Intel, so the hub may carry it) when the operator gave it.
- `SimulatedAttester`: development only, INSECURE, and only when explicitly allowed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Protocol

from attestation import DcapCollateral, DcapEvidence, Evidence, SimulatedAttester, code_measurement
from attestation.gramine import GramineAttester, GramineError, NoAttestationError
from attestation.pccs import PccsClient, PccsError, PlatformId, platform_of
from cloud_hub.config import HubConfig
from cloud_hub.errors import HubError, NoTeeError

log = logging.getLogger("cloud_hub")


class Attester(Protocol):
    def evidence(self, report_data: bytes) -> Evidence: ...


class DcapAttester:
    def __init__(self, gramine: GramineAttester, collateral: DcapCollateral | None) -> None:
        self.gramine = gramine
        # Replaced whole by the refresher; readers see the old or the new one, never a mix.
        self.collateral = collateral

    def evidence(self, report_data: bytes) -> DcapEvidence:
        return DcapEvidence(quote=self.gramine.quote(report_data), collateral=self.collateral)


class CollateralRefresher:
    """Keeps the attester's collateral fresh from a PCCS: once at start, then periodically.

    The platform (FMSPC, PCK CA, TEE) is read from a probe quote of this very enclave. A failed
    fetch keeps the previous collateral and is logged: agents then see the old collateral
    expire rather than a hub that stops answering.
    """

    def __init__(self, attester: DcapAttester, pccs: PccsClient) -> None:
        self._attester = attester
        self._pccs = pccs
        self._platform: PlatformId | None = None

    async def refresh(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            if self._platform is None:
                probe = await loop.run_in_executor(None, self._attester.gramine.quote, bytes(64))
                self._platform = platform_of(probe)
            p = self._platform
            self._attester.collateral = await self._pccs.collateral(
                fmspc=p.fmspc, ca=p.ca, tee=p.tee
            )
        except (PccsError, GramineError, ValueError) as exc:
            log.warning("DCAP collateral refresh failed: %s", exc)
            return False
        log.info("DCAP collateral refreshed for FMSPC %s", self._platform.fmspc)
        return True


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
    if collateral is None and config.pccs_url is None:
        log.warning("no DCAP collateral configured: agents will not be able to appraise the TCB")
    log.info("attesting with Gramine (%s), DCAP quotes", gramine.attestation_type)
    return DcapAttester(gramine, collateral)
