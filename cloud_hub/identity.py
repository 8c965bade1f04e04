"""The hub's in-enclave identity: keys made at start that never leave the process unsealed.

An X25519 key receives sealed payloads and audit reveals; an ML-KEM-768 + X25519 key (the
hybrid post-quantum suite) receives payloads from devices that choose it; an Ed25519 key signs
answers. Every public key and a verifier's nonce are bound into the attestation evidence (see
`attestation.binding`), and all of them into the key id envelopes name.

`suites` are the HPKE suites the hub accepts on envelopes. The X25519 key exists either way
(reveals are sealed to it), but a hub configured with the hybrid suite alone refuses an
envelope sealed with X25519 (`unsupported_suite`): that is an operator's minimum.

`to_bytes` / `from_bytes` are what `cloud_hub.sealing` seals to the enclave's measurement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives import hpke

from attestation import AttestationBundle, report_data
from escalade_protocol.codec import Reader, Writer
from escalade_protocol.envelope import HpkeSuiteId, HubPrivateKey
from escalade_protocol.hub_keys import (
    HYBRID_PRIVATE_SIZE,
    SUITE_STRENGTH,
    HybridKey,
    OfferedKey,
    offered_pairs,
)
from escalade_protocol.keys import (
    Ed25519PrivateKey,
    X25519PrivateKey,
    hub_key_id,
    public_bytes,
)
from escalade_protocol.messages import HubModelInfo

if TYPE_CHECKING:
    from cloud_hub.attesters import Attester

_SERIAL_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class HubIdentity:
    encryption_key: X25519PrivateKey
    signing_key: Ed25519PrivateKey
    encryption_public: bytes
    signing_public: bytes
    key_id: bytes
    hybrid: HybridKey | None = None
    suites: frozenset[HpkeSuiteId] = frozenset({HpkeSuiteId.X25519})
    # Built once: pyca makes a new HPKE key object per construction.
    hybrid_private: hpke.MLKEM768X25519PrivateKey | None = None
    offered: tuple[OfferedKey, ...] = ()

    @classmethod
    def generate(cls, suites: Iterable[HpkeSuiteId] = SUITE_STRENGTH) -> HubIdentity:
        suites = frozenset(suites)
        hybrid = HybridKey.generate() if HpkeSuiteId.MLKEM768_X25519 in suites else None
        return cls.assemble(
            X25519PrivateKey.generate(), Ed25519PrivateKey.generate(), hybrid, suites
        )

    @classmethod
    def assemble(
        cls,
        encryption_key: X25519PrivateKey,
        signing_key: Ed25519PrivateKey,
        hybrid: HybridKey | None,
        suites: frozenset[HpkeSuiteId],
    ) -> HubIdentity:
        if not suites:
            raise ValueError("a hub must accept at least one HPKE suite")
        if (HpkeSuiteId.MLKEM768_X25519 in suites) != (hybrid is not None):
            raise ValueError("the hybrid suite needs a hybrid key, and only it does")
        enc_pub = public_bytes(encryption_key.public_key())
        sig_pub = public_bytes(signing_key.public_key())
        offered = (
            (OfferedKey(suite=HpkeSuiteId.MLKEM768_X25519, public_key=hybrid.public_bytes()),)
            if hybrid is not None
            else ()
        )
        return cls(
            encryption_key,
            signing_key,
            enc_pub,
            sig_pub,
            hub_key_id(enc_pub, sig_pub, offered_pairs(offered)),
            hybrid=hybrid,
            suites=suites,
            hybrid_private=hybrid.hpke_key if hybrid is not None else None,
            offered=offered,
        )

    def private_for(self, suite: HpkeSuiteId) -> HubPrivateKey | None:
        """The key that opens an envelope sealed with `suite`; None when it is not accepted."""
        if suite not in self.suites:
            return None
        if suite is HpkeSuiteId.MLKEM768_X25519:
            return self.hybrid_private
        return self.encryption_key

    def attest(self, attester: Attester, nonce: bytes, model: HubModelInfo) -> AttestationBundle:
        binding = report_data(
            encryption_key=self.encryption_public,
            signing_key=self.signing_public,
            nonce=nonce,
            additional_keys=offered_pairs(self.offered),
        )
        return AttestationBundle(
            hub_key_id=self.key_id,
            encryption_key=self.encryption_public,
            signing_key=self.signing_public,
            nonce=nonce,
            evidence=attester.evidence(binding),
            model=model,
            additional_keys=self.offered,
        )

    def to_bytes(self) -> bytes:
        """The private keys, for sealing only (never written anywhere unsealed)."""
        writer = (
            Writer()
            .u8(_SERIAL_VERSION)
            .fixed(self.encryption_key.private_bytes_raw(), 32)
            .fixed(self.signing_key.private_bytes_raw(), 32)
        )
        if self.hybrid is None:
            return writer.u8(0).getvalue()
        return writer.u8(1).fixed(self.hybrid.private_bytes(), HYBRID_PRIVATE_SIZE).getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, suites: Iterable[HpkeSuiteId]) -> HubIdentity:
        """Keys from `to_bytes`; a hybrid key is made when `suites` asks for one it lacked."""
        reader = Reader(data)
        if reader.u8() != _SERIAL_VERSION:
            raise ValueError("unknown sealed identity version")
        enc = X25519PrivateKey.from_private_bytes(reader.fixed(32))
        sig = Ed25519PrivateKey.from_private_bytes(reader.fixed(32))
        hybrid = (
            HybridKey.from_private_bytes(reader.fixed(HYBRID_PRIVATE_SIZE)) if reader.u8() else None
        )
        reader.finish()
        suites = frozenset(suites)
        if HpkeSuiteId.MLKEM768_X25519 not in suites:
            hybrid = None
        elif hybrid is None:
            hybrid = HybridKey.generate()
        return cls.assemble(enc, sig, hybrid, suites)
