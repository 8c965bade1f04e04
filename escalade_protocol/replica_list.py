"""The signed list of hub replicas that share one database, as a replica hands it to agents.

An agent asks any attested replica (``POST /v1/replicas`` with a fresh nonce) and gets the
replicas alive now, signed by the answering replica's attested Ed25519 key, so a network
attacker can neither add a replica nor replay an old list. The list only says where to look:
the agent still attests every replica before it sends one embedding there, and a replica whose
evidence binds other keys than the list names is refused.

Layout (integers big-endian, the project's canonical codec, so equal lists encode equally)::

    list:  "ESL1" | u32 len | body | 64-byte Ed25519 signature over DOMAIN || body
    body:  u8 version | issuer hub key id | nonce (32) | u64 issued_at_ms | u16 n | entries
    entry: text url | hub key id | text tee
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature

from escalade_protocol.codec import Reader, Writer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import HUB_KEY_ID_SIZE, Ed25519PrivateKey, Ed25519PublicKey

VERSION: Final = 1
MAGIC: Final = b"ESL1"
DOMAIN: Final = b"escalade/v1/replica-list\x00"
NONCE_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
MAX_REPLICAS: Final = 256
CONTENT_TYPE: Final = "application/vnd.escalade.replica-list"


@dataclass(frozen=True, slots=True)
class ReplicaEntry:
    url: str
    key_id: bytes
    tee: str


@dataclass(frozen=True, slots=True)
class ReplicaList:
    issuer_key_id: bytes
    nonce: bytes
    issued_at_ms: int
    replicas: tuple[ReplicaEntry, ...]
    version: int = VERSION

    def encode_body(self) -> bytes:
        if len(self.replicas) > MAX_REPLICAS:
            raise ValueError(f"a replica list holds at most {MAX_REPLICAS} replicas")
        w = (
            Writer()
            .u8(self.version)
            .fixed(self.issuer_key_id, HUB_KEY_ID_SIZE)
            .fixed(self.nonce, NONCE_SIZE)
            .u64(self.issued_at_ms)
            .u16(len(self.replicas))
        )
        for entry in self.replicas:
            w.text(entry.url).fixed(entry.key_id, HUB_KEY_ID_SIZE).text(entry.tee)
        return w.getvalue()

    def sign(self, key: Ed25519PrivateKey) -> bytes:
        body = self.encode_body()
        signature = key.sign(DOMAIN + body)
        return Writer().raw(MAGIC).long_bytes(body).fixed(signature, SIGNATURE_SIZE).getvalue()


def verify_replica_list(
    data: bytes, key: Ed25519PublicKey, *, issuer_key_id: bytes, nonce: bytes
) -> ReplicaList:
    """The list, once its signature, issuer and nonce check out; `ProtocolError` otherwise."""
    r = Reader(data)
    if r.fixed(4) != MAGIC:
        raise ProtocolError(ErrorCode.MALFORMED, "not a replica list")
    body = r.long_bytes()
    signature = r.fixed(SIGNATURE_SIZE)
    r.finish()
    try:
        key.verify(signature, DOMAIN + body)
    except InvalidSignature:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "replica list signature") from None
    listing = _decode_body(body)
    if listing.issuer_key_id != issuer_key_id:
        raise ProtocolError(ErrorCode.UNKNOWN_HUB_KEY, "replica list signed by another hub key")
    if listing.nonce != nonce:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "replica list answers another nonce")
    return listing


def _decode_body(body: bytes) -> ReplicaList:
    b = Reader(body)
    version = b.u8()
    if version != VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"replica list version {version}")
    issuer, nonce, issued_at_ms = b.fixed(HUB_KEY_ID_SIZE), b.fixed(NONCE_SIZE), b.u64()
    count = b.u16()
    if count > MAX_REPLICAS:
        raise ProtocolError(ErrorCode.MALFORMED, f"more than {MAX_REPLICAS} replicas")
    entries = tuple(
        ReplicaEntry(url=b.text(), key_id=b.fixed(HUB_KEY_ID_SIZE), tee=b.text())
        for _ in range(count)
    )
    b.finish()
    return ReplicaList(
        issuer_key_id=issuer, nonce=nonce, issued_at_ms=issued_at_ms, replicas=entries
    )
