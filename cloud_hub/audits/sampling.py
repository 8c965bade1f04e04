"""Which escalations the hub audits: a keyed PRF over the request, unpredictable to devices.

`selected` is HMAC-SHA256(key, request digest) read as a number in [0, 1) and compared with
the audit rate. The key is made at start inside the enclave and never leaves it, so a device
cannot tell which of its envelopes will be audited before the answer says so (and the digest
covers the whole envelope, fresh nonce included, so it cannot grind for unaudited ones
cheaper than sending them).
"""

from __future__ import annotations

import hmac
import secrets


class AuditSampler:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def draw(self, request_digest: bytes) -> float:
        """This request's uniform draw in [0, 1)."""
        mac = hmac.digest(self._key, request_digest, "sha256")
        return int.from_bytes(mac[:8], "big") / 2**64

    def selected(self, request_digest: bytes, rate: float) -> bool:
        return rate > 0.0 and self.draw(request_digest) < rate
