"""Device enrollment with one-time tokens.

An administrator creates a token (only its SHA-256 is stored; tokens are 256-bit random, so a
fast hash is enough). The device proves possession of its Ed25519 key by signing the token and
the key together; the hub consumes the token and records the device in one transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature

from cloud_hub.store import Store
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import load_ed25519_public
from escalade_protocol.messages import EnrollRequest, enrollment_proof_bytes

DEFAULT_TOKEN_TTL = timedelta(hours=24)
TOKEN_PREFIX = "esc_enr_"  # noqa: S105 (a public prefix, not a secret)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    store: Store,
    *,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
    note: str = "",
    uses: int = 1,
    auto_approve: bool = True,
) -> tuple[str, datetime]:
    """Make an enrollment token for `uses` devices (one by default); returns it (shown once)
    and its expiry. Without `auto_approve` its devices wait, pending, for an approval."""
    # The prefix makes tokens easy to spot by secret scanners and keeps them from starting
    # with "-", which command-line parsers would read as an option.
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = store.add_token(
        token_hash(token), ttl=ttl, note=note, uses=uses, auto_approve=auto_approve
    )
    return token, expires


def enroll(store: Store, request: EnrollRequest) -> uuid.UUID:
    public_key = load_ed25519_public(request.public_key)
    try:
        public_key.verify(request.proof, enrollment_proof_bytes(request.token, request.public_key))
    except InvalidSignature:
        raise ProtocolError(
            ErrorCode.BAD_PROOF, "proof of possession does not verify with this key"
        ) from None
    return store.enroll(
        token_hash=token_hash(request.token), public_key=request.public_key, profile=request.profile
    )
