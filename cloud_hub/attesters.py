"""The hub's attesters: who produces the evidence that binds the hub's keys.

- `DcapAttester`: a DCAP quote, from `/dev/attestation` inside a Gramine SGX enclave or from
  configfs-tsm in a TDX confidential VM, passed on with Intel's collateral (signed by Intel,
  so the hub may carry it) when the operator gave it.
- `SnpAttester`: in an SEV-SNP confidential VM, a report from configfs-tsm with the host's
  certificate table (VCEK/VLEK, ASK, ARK: signed by AMD, so the hub may carry them).
- `SimulatedAttester`: development only, INSECURE, and only when explicitly allowed.

`--tee auto|sgx-gramine|tdx|sev-snp|simulated` picks one; `auto` takes the first interface
present (Gramine's, then configfs-tsm's provider) and names both when neither is there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Protocol

from attestation import (
    DcapCollateral,
    DcapEvidence,
    Evidence,
    SimulatedAttester,
    SnpEvidence,
    code_measurement,
)
from attestation.gramine import ATTESTATION_DIR, GramineAttester, GramineError, NoAttestationError
from attestation.pccs import PccsClient, PccsError, PlatformId, platform_of
from attestation.snp import CertificateError
from attestation.snp.certtable import host_certificates
from attestation.snp.errors import KdsError, ReportFormatError
from attestation.snp.kds import KdsClient, SnpCertificates
from attestation.snp.report import parse_report
from attestation.tsm import TSM_REPORT_DIR, NoTsmError, TsmAttester, TsmError
from cloud_hub.config import HubConfig
from cloud_hub.errors import HubError, NoTeeError

log = logging.getLogger("cloud_hub")


class Attester(Protocol):
    def evidence(self, report_data: bytes) -> Evidence: ...


class QuoteSource(Protocol):
    def quote(self, report_data: bytes) -> bytes: ...


class DcapAttester:
    def __init__(self, source: QuoteSource, collateral: DcapCollateral | None) -> None:
        self.source = source
        # Replaced whole by the refresher; readers see the old or the new one, never a mix.
        self.collateral = collateral

    def evidence(self, report_data: bytes) -> DcapEvidence:
        return DcapEvidence(quote=self.source.quote(report_data), collateral=self.collateral)


class SnpAttester:
    def __init__(self, tsm: TsmAttester) -> None:
        self.tsm = tsm
        # From AMD KDS (`KdsRefresher`) for hosts that supply no certificate table; replaced
        # whole by the refresher, so readers see the old or the new set, never a mix.
        self.kds_certificates: SnpCertificates | None = None

    def evidence(self, report_data: bytes) -> SnpEvidence:
        result = self.tsm.report(report_data)
        try:
            certs = host_certificates(result.auxblob)
        except CertificateError as exc:
            log.warning("unusable SNP certificate table from the host: %s", exc)
            certs = None
        if certs is not None and certs.vcek is not None:
            return SnpEvidence(report=result.outblob, vcek=certs.vcek, cert_chain=certs.chain_pem)
        fetched = self.kds_certificates
        if fetched is not None:
            return SnpEvidence(
                report=result.outblob,
                vcek=fetched.vcek,
                cert_chain=fetched.chain.decode("ascii"),
                crl=fetched.crl,
            )
        # Serve the report anyway: the agent's verdict names what is missing (`vcek_missing`).
        return SnpEvidence(report=result.outblob, cert_chain=certs.chain_pem if certs else None)


class KdsRefresher:
    """Fetches this VM's VCEK, its chain and AMD's CRL from KDS (or a mirror, or the offline
    cache), once at start and then periodically: the chip id and reported TCB come from a
    probe report of this very guest, the product from its CPUID (report v3). A failed fetch
    keeps the previous certificates and is logged."""

    def __init__(self, attester: SnpAttester, kds: KdsClient) -> None:
        self._attester = attester
        self._kds = kds

    async def refresh(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            probe = await loop.run_in_executor(None, self._attester.tsm.report, bytes(64))
            report = parse_report(probe.outblob)
            product = report.product_from_cpuid
            if product is None:
                raise KdsError("the report names no CPU (v2 report): KDS needs the product")
            certificates = await self._kds.certificates(report, product)
        except (KdsError, TsmError, ReportFormatError) as exc:
            log.warning("SEV-SNP certificate fetch from KDS failed: %s", exc)
            return False
        self._attester.kds_certificates = certificates
        log.info("SEV-SNP VCEK and chain fetched from KDS for %s", product.value)
        return True


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
                probe = await loop.run_in_executor(None, self._attester.source.quote, bytes(64))
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


_HELP = (
    "Run the hub inside Gramine-SGX (docs/enclave.md) or a TDX / SEV-SNP confidential VM "
    "(docs/attestation.md), or start it with --tee simulated (--allow-simulated-tee) for "
    "INSECURE development use"
)


def _tsm_dir(config: HubConfig) -> Path:
    # --attestation-dir names the chosen TEE's interface; its default is Gramine's.
    return TSM_REPORT_DIR if config.attestation_dir == ATTESTATION_DIR else config.attestation_dir


def _collateral(config: HubConfig) -> DcapCollateral | None:
    collateral = load_collateral(config.collateral_file) if config.collateral_file else None
    if collateral is None and config.pccs_url is None:
        log.warning("no DCAP collateral configured: agents will not be able to appraise the TCB")
    return collateral


def _from_tsm(tsm: TsmAttester, config: HubConfig) -> Attester:
    log.info("attesting through configfs-tsm (%s) at %s", tsm.tee, tsm.entry)
    if tsm.tee == "sev-snp":
        return SnpAttester(tsm)
    return DcapAttester(tsm, _collateral(config))


def evidence_kind(attester: Attester) -> str:
    """The evidence an attester produces, as replica lists and LAN announcements name it:
    dcap (SGX or TDX quotes), sev-snp, or simulated."""
    if isinstance(attester, DcapAttester):
        return "dcap"
    if isinstance(attester, SnpAttester):
        return "sev-snp"
    return "simulated"


def make_attester(config: HubConfig) -> Attester:
    tee = "simulated" if config.allow_simulated_tee else config.tee
    if tee == "simulated":
        log.warning("SIMULATED TEE: attestation evidence is INSECURE and proves nothing")
        return SimulatedAttester(code_measurement())
    try:
        if tee in ("tdx", "sev-snp"):
            return _from_tsm(TsmAttester.open(_tsm_dir(config), expect=tee), config)
        found = (
            GramineAttester.open(config.attestation_dir) if tee == "sgx-gramine" else _auto(config)
        )
        if isinstance(found, TsmAttester):
            return _from_tsm(found, config)
    except (NoAttestationError, NoTsmError) as exc:
        raise NoTeeError(f"{exc}. {_HELP}") from None
    except (GramineError, TsmError) as exc:
        raise NoTeeError(str(exc)) from None
    log.info("attesting with Gramine (%s), DCAP quotes", found.attestation_type)
    return DcapAttester(found, _collateral(config))


def _auto(config: HubConfig) -> GramineAttester | TsmAttester:
    """The first attestation interface present: Gramine's, then configfs-tsm."""
    try:
        return GramineAttester.open(config.attestation_dir)
    except NoAttestationError as gramine_missing:
        try:
            return TsmAttester.open(_tsm_dir(config))
        except NoTsmError as tsm_missing:
            raise NoTsmError(
                f"no TEE attestation interface found: {gramine_missing}; and {tsm_missing}"
            ) from None
