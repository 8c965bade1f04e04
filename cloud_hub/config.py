"""The hub's configuration: parsed once at the entry point, then passed in, frozen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cloud_hub.store import sqlite_url
from escalade_protocol.envelope import HpkeSuiteId
from escalade_protocol.hub_keys import SUITE_STRENGTH


@dataclass(frozen=True, slots=True, kw_only=True)
class HubConfig:
    data_dir: Path
    models_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    database_url: str | None = None
    # Serve evidence from the software-only attester. INSECURE; development only.
    allow_simulated_tee: bool = False
    # Which attester: auto, sgx-gramine, tdx, sev-snp (configfs-tsm) or simulated (INSECURE).
    tee: Literal["auto", "sgx-gramine", "tdx", "sev-snp", "simulated"] = "auto"
    # The chosen TEE's attestation interface: Gramine's pseudo-files by default; for tdx and
    # sev-snp, configfs-tsm's report directory when changed (a test may point it at a fake).
    attestation_dir: Path = Path("/dev/attestation")
    # Intel's collateral for this platform (PCCS JSON), passed on to agents with each quote.
    collateral_file: Path | None = None
    # A PCCS to fetch (and refresh) that collateral from instead of a file.
    pccs_url: str | None = None
    collateral_refresh_s: float = 3600.0
    # SEV-SNP: where to fetch the VCEK, chain and CRL when the host supplies no certificate
    # table: AMD's KDS or a mirror (cached in the data dir), or "offline" (that cache only).
    kds_url: str | None = None
    timestamp_window_s: float = 60.0
    # How often devices' mean embeddings are compared with their peers'.
    cohort_interval_s: float = 300.0
    # Dynamic batching of the hub model (Triton's max_batch_size / max_queue_delay): 0 ms runs
    # what is queued as soon as the model is free; a delay trades latency for fuller batches.
    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    # Fresh attestation quotes per client address: sustained per second, and burst.
    attestation_rate_per_s: float = 1.0
    attestation_burst: float = 10.0
    max_body_bytes: int = 1 << 20
    # Audits by re-encoding: the share of answered escalations audited (0: off), and how long
    # a device has to reveal an audited input.
    audit_rate: float = 0.0
    audit_deadline_s: float = 120.0
    # Scale-out: the URL agents reach this replica at (None: the one it listens on), and how
    # often it heartbeats into the shared replica table / how old a heartbeat may be.
    advertise_url: str | None = None
    replica_heartbeat_s: float = 2.0
    replica_liveness_s: float = 10.0
    # The HPKE suites offered in the attested bundle and accepted on envelopes (an X25519 key
    # is kept either way: audit reveals are sealed to it).
    hpke_suites: frozenset[HpkeSuiteId] = frozenset(SUITE_STRENGTH)
    # Keep the hub's keys across restarts, sealed to the enclave's measurement (SGX only).
    seal_keys: bool = False
    # Print "READY <url>" on stdout once listening, for supervisors and tests.
    announce_ready: bool = False
    # Pinned release public keys (64 hex digits or .pub files): uploaded bundles must be signed
    # by one of them. Empty: unsigned bundles are accepted, with a warning (docs/models.md).
    release_keys: tuple[str, ...] = ()
    # How often rollouts with `auto` bounds are judged and advanced or paused (0: never).
    rollout_auto_s: float = 60.0

    # The model network (docs/model-network.md): which of the bundle's hub models to serve,
    # by name or kind ("specialists": all of them). Empty: the bundle's hub model alone.
    hub_models: tuple[str, ...] = ()
    # The meta-router's budget per request: declared price per 1000 answers and hub model
    # time; and its exploration rate (None: the bundle's).
    route_max_price_per_1k: float | None = None
    route_max_model_ms: float | None = None
    route_exploration: float | None = None
    # Declared price per 1000 answers of the one hub model (without a network).
    hub_price_per_1k: float = 1.0

    @property
    def effective_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)
