"""Evidence types (RATS: what the Attester produces), as tagged, frozen models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from escalade_protocol.hub_keys import OfferedKey
from escalade_protocol.messages import HexBytes, HubModelInfo, Message


class SimulatedEvidence(Message):
    """Software-only evidence for development. INSECURE: anyone can produce it.

    It proves nothing about the code that runs; it exists so that the whole flow (nonce, key
    binding, appraisal, the refusal path) can run on machines without a TEE. Verifiers accept it
    only when their policy names `allow_simulated_tee`, and then label every result insecure.
    """

    type: Literal["simulated"] = "simulated"
    insecure: Literal[True] = True
    measurement: HexBytes = Field(description="SHA-256 over the hub's code, self-reported")
    report_data: HexBytes


class DcapCollateral(Message):
    """Intel's signed collateral for one quote, as PCCS serves it.

    It is signed by Intel, so it may travel through untrusted hands (the hub passes it on with
    its quote); the verifier checks every signature against its pinned root.
    """

    pck_crl_issuer_chain: str
    root_ca_crl: str = Field(description="hex DER")
    pck_crl: str = Field(description="hex DER")
    tcb_info_issuer_chain: str
    tcb_info: str = Field(description="the exact JSON text Intel signed")
    tcb_info_signature: str = Field(description="hex r||s")
    qe_identity_issuer_chain: str
    qe_identity: str = Field(description="the exact JSON text Intel signed")
    qe_identity_signature: str = Field(description="hex r||s")


class DcapEvidence(Message):
    """An Intel DCAP quote (SGX v3 or TDX v4), optionally with its collateral."""

    type: Literal["dcap"] = "dcap"
    insecure: Literal[False] = False
    quote: HexBytes
    collateral: DcapCollateral | None = None


class SnpEvidence(Message):
    """An AMD SEV-SNP attestation report with the certificates to check it.

    The certificates are AMD's (from KDS or the host's extended report), so the hub may carry
    them; without them the verifier can only use AMD's shipped ASK/ASVK and ARK, and a VCEK
    must still come from somewhere: a report without one is refused (`vcek_missing`).
    """

    type: Literal["sev-snp"] = "sev-snp"
    insecure: Literal[False] = False
    report: HexBytes
    vcek: HexBytes | None = Field(default=None, description="VCEK or VLEK, DER")
    cert_chain: str | None = Field(default=None, description="PEM: ASK or ASVK, then ARK")
    crl: HexBytes | None = Field(default=None, description="AMD's CRL for the product, DER")


Evidence = Annotated[SimulatedEvidence | DcapEvidence | SnpEvidence, Field(discriminator="type")]


class AttestationBundle(Message):
    """What a hub returns for `POST /v1/attestation`: its keys, the evidence binding them."""

    hub_key_id: HexBytes
    encryption_key: HexBytes = Field(description="X25519 public key, payloads are sealed to it")
    signing_key: HexBytes = Field(description="Ed25519 public key, answers are signed by it")
    nonce: HexBytes
    evidence: Evidence
    model: HubModelInfo
    # Further sealing keys (post-quantum), all bound into the evidence and the key id.
    additional_keys: tuple[OfferedKey, ...] = ()
