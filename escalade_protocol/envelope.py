"""The escalation envelope: a signed header and an HPKE-sealed embedding.

Layout of a sealed envelope (all integers big-endian)::

    "ESC1" | u16 len | header | u32 len | hpke_enc || ciphertext | 64-byte Ed25519 signature

- header: version, device id, model id + version, sequence number, timestamp, nonce, hub key id,
  the input commitment (`provenance`: binds the embedding to the input it encodes) and the HPKE
  suite the payload is sealed with (`HpkeSuiteId`), so the suite is signed and a hub can refuse
  a downgrade before decrypting.
- The payload (`EscalationPayload`: the embedding and, optionally, the device's own local
  probabilities for the hub to fuse with its answer) is sealed with HPKE base mode (RFC 9180) to
  the hub's attested key for the named suite: X25519 is DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
  AES-256-GCM. The header is bound into the HPKE key schedule through `info`, so a payload
  cannot be moved under another header. Local probabilities travel inside the ciphertext, not
  the header: they say as much about the input as the embedding does.
- The device signs, with its enrolled Ed25519 key, the domain-separated encoding of
  header and ciphertext (encrypt-then-sign): the hub rejects forged or unknown senders before
  spending a decryption, and the signature reveals nothing about the plaintext.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke

from escalade_protocol.codec import Reader, Writer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import (
    HUB_KEY_ID_SIZE,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    X25519PrivateKey,
    X25519PublicKey,
)
from escalade_protocol.tensor import Tensor

# The hub's HPKE keys, one type per suite.
HubPublicKey = X25519PublicKey | hpke.MLKEM768X25519PublicKey
HubPrivateKey = X25519PrivateKey | hpke.MLKEM768X25519PrivateKey

# 2: the header carries an input commitment. 3: the header names the HPKE suite; the payload
# may carry the device's local probabilities.
ENVELOPE_VERSION: Final = 3
MAGIC: Final = b"ESC1"
NONCE_SIZE: Final = 16
COMMITMENT_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
MAX_ENVELOPE_BYTES: Final = 1 << 22

SIGNATURE_DOMAIN: Final = b"escalade/v1/envelope-signature\x00"
HPKE_INFO_DOMAIN: Final = b"escalade/v1/envelope-payload\x00"


class HpkeSuiteId(IntEnum):
    """The HPKE suites an envelope can be sealed with, as named in its signed header."""

    X25519 = 1
    # The hybrid post-quantum KEM (X-Wing style: ML-KEM-768 combined with X25519).
    MLKEM768_X25519 = 2


HPKE_SUITES: Final = {
    HpkeSuiteId.X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    HpkeSuiteId.MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
}
# The classical suite: audit reveals (`provenance`) and every hub offer it.
HPKE_SUITE: Final = HPKE_SUITES[HpkeSuiteId.X25519]
_PAYLOAD_HAS_LOCAL_PROBS: Final = 1


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    device_id: uuid.UUID
    model_id: str
    model_version: int
    seq: int
    timestamp_ms: int
    nonce: bytes
    hub_key_id: bytes
    # `provenance.commit(...)`; all zero commits to nothing (and fails any audit).
    commitment: bytes = bytes(COMMITMENT_SIZE)
    suite: HpkeSuiteId = HpkeSuiteId.X25519
    version: int = ENVELOPE_VERSION

    def encode(self) -> bytes:
        return (
            Writer()
            .u8(self.version)
            .fixed(self.device_id.bytes, 16)
            .text(self.model_id)
            .u32(self.model_version)
            .u64(self.seq)
            .u64(self.timestamp_ms)
            .fixed(self.nonce, NONCE_SIZE)
            .fixed(self.hub_key_id, HUB_KEY_ID_SIZE)
            .fixed(self.commitment, COMMITMENT_SIZE)
            .u8(self.suite)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> EnvelopeHeader:
        # The layout `encode` writes, read with two struct calls instead of eight reader
        # calls: this runs once per escalation on the hub's event loop.
        if not data:
            raise ProtocolError(ErrorCode.MALFORMED, "message is truncated")
        if data[0] != ENVELOPE_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION, f"envelope version {data[0]} is not supported"
            )
        if len(data) < _HEADER_HEAD.size:
            raise ProtocolError(ErrorCode.MALFORMED, "message is truncated")
        version, device_id, text_size = _HEADER_HEAD.unpack_from(data)
        tail = _HEADER_HEAD.size + text_size
        _check_size(len(data), tail + _HEADER_TAIL.size)
        try:
            model_id = data[_HEADER_HEAD.size : tail].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.MALFORMED, "text field is not UTF-8") from None
        (model_version, seq, timestamp_ms, nonce, hub_key_id, commitment, suite) = (
            _HEADER_TAIL.unpack_from(data, tail)
        )
        try:
            suite_id = HpkeSuiteId(suite)
        except ValueError:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_SUITE, f"HPKE suite {suite} is not supported"
            ) from None
        return cls(
            version=version,
            device_id=uuid.UUID(bytes=device_id),
            model_id=model_id,
            model_version=model_version,
            seq=seq,
            timestamp_ms=timestamp_ms,
            nonce=nonce,
            hub_key_id=hub_key_id,
            commitment=commitment,
            suite=suite_id,
        )


# version, device id, model id length | model version, seq, timestamp, nonce, hub key id,
# commitment, suite
_HEADER_HEAD: Final = struct.Struct(">B16sH")
_HEADER_TAIL: Final = struct.Struct(f">IQQ{NONCE_SIZE}s{HUB_KEY_ID_SIZE}s{COMMITMENT_SIZE}sB")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")


def _check_size(actual: int, expected: int) -> None:
    if actual < expected:
        raise ProtocolError(ErrorCode.MALFORMED, "message is truncated")
    if actual > expected:
        raise ProtocolError(ErrorCode.MALFORMED, "trailing bytes after message")


@dataclass(frozen=True, slots=True)
class EscalationPayload:
    """What the envelope seals: the embedding, and the device's local probabilities if sent.

    Layout: u8 flags (1: local probabilities follow) | embedding tensor | [probabilities tensor].
    """

    embedding: Tensor
    local_probs: Tensor | None = None

    def encode(self) -> bytes:
        writer = Writer().u8(_PAYLOAD_HAS_LOCAL_PROBS if self.local_probs is not None else 0)
        self.embedding.encode_into(writer)
        if self.local_probs is not None:
            self.local_probs.encode_into(writer)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> EscalationPayload:
        reader = Reader(data)
        flags = reader.u8()
        if flags not in (0, _PAYLOAD_HAS_LOCAL_PROBS):
            raise ProtocolError(ErrorCode.MALFORMED, f"unknown payload flags {flags}")
        embedding = Tensor.decode_from(reader)
        local_probs = Tensor.decode_from(reader) if flags else None
        reader.finish()
        return cls(embedding, local_probs)


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    """A parsed but not yet verified envelope."""

    header: EnvelopeHeader
    header_bytes: bytes
    ciphertext: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        return _signed_bytes(self.header_bytes, self.ciphertext)

    def verify_signature(self, device_key: Ed25519PublicKey) -> None:
        try:
            device_key.verify(self.signature, self.signed_bytes())
        except InvalidSignature:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "envelope signature is invalid") from None

    def open_payload(self, hub_key: HubPrivateKey) -> EscalationPayload:
        """Decrypt with the hub's key for the suite the header names."""
        try:
            plaintext = HPKE_SUITES[self.header.suite].decrypt(
                self.ciphertext, hub_key, info=HPKE_INFO_DOMAIN + self.header_bytes
            )
        except (InvalidTag, ValueError):
            raise ProtocolError(ErrorCode.BAD_CIPHERTEXT, "payload cannot be decrypted") from None
        except TypeError:  # `hub_key` belongs to another suite
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_SUITE, f"no hub key for suite {self.header.suite.name}"
            ) from None
        return EscalationPayload.decode(plaintext)


def _signed_bytes(header_bytes: bytes, ciphertext: bytes) -> bytes:
    # = SIGNATURE_DOMAIN || short_bytes(header) || long_bytes(ciphertext), built directly.
    return b"".join(
        (
            SIGNATURE_DOMAIN,
            _U16.pack(len(header_bytes)),
            header_bytes,
            _U32.pack(len(ciphertext)),
            ciphertext,
        )
    )


def seal(
    header: EnvelopeHeader,
    payload: Tensor | EscalationPayload,
    *,
    device_key: Ed25519PrivateKey,
    hub_key: HubPublicKey,
) -> bytes:
    """Seal `payload` (an embedding alone, or with local probabilities) to `hub_key`.

    `hub_key` must be the hub's key for `header.suite`.
    """
    if isinstance(payload, Tensor):
        payload = EscalationPayload(payload)
    header_bytes = header.encode()
    ciphertext = HPKE_SUITES[header.suite].encrypt(
        payload.encode(), hub_key, info=HPKE_INFO_DOMAIN + header_bytes
    )
    signature = device_key.sign(_signed_bytes(header_bytes, ciphertext))
    return (
        Writer()
        .raw(MAGIC)
        .short_bytes(header_bytes)
        .long_bytes(ciphertext)
        .fixed(signature, SIGNATURE_SIZE)
        .getvalue()
    )


def parse(data: bytes) -> SealedEnvelope:
    """Split an envelope into its parts; checks structure only, nothing cryptographic.

    The layout `seal` writes, read by offsets (the hub parses one per escalation).
    """
    size = len(data)
    if size > MAX_ENVELOPE_BYTES:
        raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, "envelope is too large")
    if size < len(MAGIC):
        raise ProtocolError(ErrorCode.MALFORMED, "message is truncated")
    if data[: len(MAGIC)] != MAGIC:
        raise ProtocolError(ErrorCode.MALFORMED, "not an Escalade envelope")
    start = len(MAGIC) + _U16.size
    if size < start:
        raise ProtocolError(ErrorCode.MALFORMED, "message is truncated")
    (header_size,) = _U16.unpack_from(data, len(MAGIC))
    header_end = start + header_size
    if size < header_end + _U32.size:
        raise ProtocolError(ErrorCode.MALFORMED, "message is truncated")
    (ciphertext_size,) = _U32.unpack_from(data, header_end)
    ciphertext_end = header_end + _U32.size + ciphertext_size
    _check_size(size, ciphertext_end + SIGNATURE_SIZE)
    header_bytes = data[start:header_end]
    return SealedEnvelope(
        EnvelopeHeader.decode(header_bytes),
        header_bytes,
        data[header_end + _U32.size : ciphertext_end],
        data[ciphertext_end:],
    )
