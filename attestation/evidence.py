"""Evidence types (RATS: what the Attester produces), as tagged, frozen models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

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


Evidence = Annotated[SimulatedEvidence, Field(discriminator="type")]


class AttestationBundle(Message):
    """What a hub returns for `POST /v1/attestation`: its keys, the evidence binding them."""

    hub_key_id: HexBytes
    encryption_key: HexBytes = Field(description="X25519 public key, payloads are sealed to it")
    signing_key: HexBytes = Field(description="Ed25519 public key, answers are signed by it")
    nonce: HexBytes
    evidence: Evidence
    model: HubModelInfo
