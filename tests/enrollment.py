"""Building enrollment requests the way a device does (key, proof of possession)."""

from __future__ import annotations

from escalade_protocol.keys import Ed25519PrivateKey, public_bytes
from escalade_protocol.messages import EnrollRequest, enrollment_proof_bytes


def enroll_request(
    token: str, key: Ed25519PrivateKey, *, signer: Ed25519PrivateKey | None = None
) -> EnrollRequest:
    """`key`'s enrollment with `token`; `signer` forges the proof with another key."""
    public_key = public_bytes(key.public_key())
    proof = (signer or key).sign(enrollment_proof_bytes(token, public_key))
    return EnrollRequest(token=token, public_key=public_key, proof=proof)
