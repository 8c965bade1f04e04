"""The hub's in-enclave identity: keys made at start that never leave the process.

An X25519 key receives sealed payloads; an Ed25519 key signs answers. Both public keys and a
verifier's nonce are bound into the attestation evidence (see `attestation.binding`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from attestation import AttestationBundle, report_data
from escalade_protocol.keys import (
    Ed25519PrivateKey,
    X25519PrivateKey,
    hub_key_id,
    public_bytes,
)
from escalade_protocol.messages import HubModelInfo

if TYPE_CHECKING:
    from cloud_hub.attesters import Attester


@dataclass(frozen=True, slots=True)
class HubIdentity:
    encryption_key: X25519PrivateKey
    signing_key: Ed25519PrivateKey
    encryption_public: bytes
    signing_public: bytes
    key_id: bytes

    @classmethod
    def generate(cls) -> HubIdentity:
        enc = X25519PrivateKey.generate()
        sig = Ed25519PrivateKey.generate()
        enc_pub = public_bytes(enc.public_key())
        sig_pub = public_bytes(sig.public_key())
        return cls(enc, sig, enc_pub, sig_pub, hub_key_id(enc_pub, sig_pub))

    def attest(self, attester: Attester, nonce: bytes, model: HubModelInfo) -> AttestationBundle:
        binding = report_data(
            encryption_key=self.encryption_public, signing_key=self.signing_public, nonce=nonce
        )
        return AttestationBundle(
            hub_key_id=self.key_id,
            encryption_key=self.encryption_public,
            signing_key=self.signing_public,
            nonce=nonce,
            evidence=attester.evidence(binding),
            model=model,
        )
