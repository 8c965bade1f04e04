"""Signed device reports: what a device tells its hub after the fact, and the hub's signed ack.

One generic message for every kind of report: a `DeviceReport` carries a tagged union of items
(`OutcomeRecord`, and `AuditReveal` when the hub audits an escalation). Layout (integers
big-endian, the project's canonical codec, so equal reports encode to equal bytes)::

    report: "ESR1" | u32 len | body | 64-byte Ed25519 signature by the device key
      body: u8 version | device id (16) | u64 sent_at_ms | nonce (16) | hub key id | u16 n | items
      item: u8 kind | u32 len | item bytes
    ack:    "ESA1" | u32 len | body | 64-byte Ed25519 signature by the hub's answer key
      body: u8 version | hub key id | report digest (SHA-256 of the whole report) | u32 n | ids
            | v2 only: u8 assigned | 32-byte bundle digest (zeros when not assigned)

Version 2 (a report sent as version 2, answered by an ack of version 2) adds the bundle the
hub's rollouts assign to the device (none: the bundle it was installed with), and the
`ModelStatus` item through which the device says which bundle it runs. The hub answers each
report in the report's version, so a version-1 device never sees a field it cannot read.

Signatures are over a domain-separated encoding (`REPORT_DOMAIN`, `ACK_DOMAIN`), so neither can
be replayed as an envelope or an answer. The ack names the report it answers by digest and lists
the record ids the hub now holds (stored now or before): the device deletes exactly those.
Reports are idempotent (the hub deduplicates by record id), so they need no replay window.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cryptography.exceptions import InvalidSignature

from escalade_protocol.codec import Reader, Writer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import HUB_KEY_ID_SIZE, Ed25519PrivateKey, Ed25519PublicKey

REPORT_VERSION: Final = 1
# Reports and acks carrying bundle assignments (`ModelStatus`, `ReportAck.assigned`).
ASSIGNMENT_VERSION: Final = 2
VERSIONS: Final = frozenset({REPORT_VERSION, ASSIGNMENT_VERSION})
NO_DIGEST: Final = bytes(32)
REPORT_MAGIC: Final = b"ESR1"
ACK_MAGIC: Final = b"ESA1"
REPORT_DOMAIN: Final = b"escalade/v1/device-report\x00"
ACK_DOMAIN: Final = b"escalade/v1/device-report-ack\x00"
SIGNATURE_SIZE: Final = 64
NONCE_SIZE: Final = 16
MAX_ITEMS: Final = 4096
REPORT_CONTENT_TYPE: Final = "application/vnd.escalade.device-report"
ACK_CONTENT_TYPE: Final = "application/vnd.escalade.device-report-ack"
NO_LABEL: Final = 0xFFFF
_F64 = struct.Struct(">d")


class ReportKind(IntEnum):
    OUTCOME = 1
    # The input and salt of an audited escalation, sealed to the hub (`provenance`).
    AUDIT_REVEAL = 2
    # Which bundle the device runs, and what became of the one assigned to it (version 2).
    MODEL_STATUS = 3


class OutcomePath(IntEnum):
    LOCAL = 0
    ESCALATED = 1
    DEGRADED = 2


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """One answer the agent gave: its decision, latencies and the hub's answer if any."""

    record_id: uuid.UUID
    at_ms: int
    model_id: str
    model_version: int
    path: OutcomePath
    reason: str  # an AnswerReason value
    local_label: int
    hub_label: int | None
    signal: float
    latency_us: int
    hub_latency_us: int | None = None
    hub_error: str = ""  # an ErrorCode value, when the hub refused

    KIND = ReportKind.OUTCOME

    def encode(self) -> bytes:
        return (
            Writer()
            .fixed(self.record_id.bytes, 16)
            .u64(self.at_ms)
            .text(self.model_id)
            .u32(self.model_version)
            .u8(self.path)
            .text(self.reason)
            .u16(self.local_label)
            .u16(NO_LABEL if self.hub_label is None else self.hub_label)
            .raw(_F64.pack(self.signal))
            .u32(min(self.latency_us, 0xFFFFFFFF))
            .u32(
                0xFFFFFFFF if self.hub_latency_us is None else min(self.hub_latency_us, 0xFFFFFFFE)
            )
            .text(self.hub_error)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> OutcomeRecord:
        r = Reader(data)
        record_id = uuid.UUID(bytes=r.fixed(16))
        at_ms, model_id, model_version = r.u64(), r.text(), r.u32()
        try:
            path = OutcomePath(r.u8())
        except ValueError:
            raise ProtocolError(ErrorCode.MALFORMED, "unknown outcome path") from None
        reason, local_label, hub_label = r.text(), r.u16(), r.u16()
        (signal,) = _F64.unpack(r.fixed(8))
        latency_us, hub_latency_us, hub_error = r.u32(), r.u32(), r.text()
        r.finish()
        return cls(
            record_id=record_id,
            at_ms=at_ms,
            model_id=model_id,
            model_version=model_version,
            path=path,
            reason=reason,
            local_label=local_label,
            hub_label=None if hub_label == NO_LABEL else hub_label,
            signal=signal,
            latency_us=latency_us,
            hub_latency_us=None if hub_latency_us == 0xFFFFFFFF else hub_latency_us,
            hub_error=hub_error,
        )


@dataclass(frozen=True, slots=True)
class AuditReveal:
    """The sealed reveal (`provenance.seal_reveal`) for the escalation whose signed answer
    asked for an audit, named by that request's digest."""

    record_id: uuid.UUID
    request_digest: bytes
    sealed: bytes

    KIND = ReportKind.AUDIT_REVEAL

    def encode(self) -> bytes:
        return (
            Writer()
            .fixed(self.record_id.bytes, 16)
            .fixed(self.request_digest, 32)
            .long_bytes(self.sealed)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> AuditReveal:
        r = Reader(data)
        item = cls(
            record_id=uuid.UUID(bytes=r.fixed(16)),
            request_digest=r.fixed(32),
            sealed=r.long_bytes(),
        )
        r.finish()
        return item


class BundleState(IntEnum):
    """What the device did with the bundle assigned to it."""

    # Runs its assignment (or, unassigned, the bundle it was installed with).
    CURRENT = 0
    # Downloading, checking or warming up the assigned bundle.
    PENDING = 1
    # Loaded it, but warm-up or its first answers failed: back on the previous bundle.
    ROLLED_BACK = 2
    # Refused it before loading (signature, digest, incompatible shapes).
    REFUSED = 3


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """The bundle a device runs (digest), and the state of the one assigned (`target`)."""

    record_id: uuid.UUID
    at_ms: int
    model_id: str
    model_version: int
    bundle_digest: bytes
    state: BundleState
    target_digest: bytes = NO_DIGEST
    # The ErrorCode value of a refusal or rollback, with a short detail.
    code: str = ""
    detail: str = ""

    KIND = ReportKind.MODEL_STATUS

    def encode(self) -> bytes:
        return (
            Writer()
            .fixed(self.record_id.bytes, 16)
            .u64(self.at_ms)
            .text(self.model_id)
            .u32(self.model_version)
            .fixed(self.bundle_digest, 32)
            .u8(self.state)
            .fixed(self.target_digest, 32)
            .text(self.code)
            .text(self.detail[:200])
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> ModelStatus:
        r = Reader(data)
        record_id = uuid.UUID(bytes=r.fixed(16))
        at_ms, model_id, model_version = r.u64(), r.text(), r.u32()
        digest = r.fixed(32)
        try:
            state = BundleState(r.u8())
        except ValueError:
            raise ProtocolError(ErrorCode.MALFORMED, "unknown bundle state") from None
        target, code, detail = r.fixed(32), r.text(), r.text()
        r.finish()
        return cls(record_id, at_ms, model_id, model_version, digest, state, target, code, detail)


ReportItem = OutcomeRecord | AuditReveal | ModelStatus
_DECODERS: dict[ReportKind, Callable[[bytes], ReportItem]] = {
    ReportKind.OUTCOME: OutcomeRecord.decode,
    ReportKind.AUDIT_REVEAL: AuditReveal.decode,
    ReportKind.MODEL_STATUS: ModelStatus.decode,
}


@dataclass(frozen=True, slots=True)
class DeviceReport:
    device_id: uuid.UUID
    sent_at_ms: int
    nonce: bytes
    hub_key_id: bytes
    items: tuple[ReportItem, ...]
    version: int = REPORT_VERSION

    def encode_body(self) -> bytes:
        if not 0 < len(self.items) <= MAX_ITEMS:
            raise ValueError(f"a report holds 1 to {MAX_ITEMS} items")
        w = (
            Writer()
            .u8(self.version)
            .fixed(self.device_id.bytes, 16)
            .u64(self.sent_at_ms)
            .fixed(self.nonce, NONCE_SIZE)
            .fixed(self.hub_key_id, HUB_KEY_ID_SIZE)
            .u16(len(self.items))
        )
        for item in self.items:
            w.u8(item.KIND).long_bytes(item.encode())
        return w.getvalue()

    def sign(self, key: Ed25519PrivateKey) -> bytes:
        body = self.encode_body()
        signature = key.sign(REPORT_DOMAIN + body)
        return Writer().raw(REPORT_MAGIC).long_bytes(body).fixed(signature, 64).getvalue()


@dataclass(frozen=True, slots=True)
class SignedReport:
    """A report as received: decoded, its signature not yet checked (needs the device key)."""

    report: DeviceReport
    body: bytes
    signature: bytes
    digest: bytes

    def verify(self, key: Ed25519PublicKey) -> DeviceReport:
        try:
            key.verify(self.signature, REPORT_DOMAIN + self.body)
        except InvalidSignature:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "device report signature") from None
        return self.report


def read_report(data: bytes) -> SignedReport:
    r = Reader(data)
    if r.fixed(4) != REPORT_MAGIC:
        raise ProtocolError(ErrorCode.MALFORMED, "not a device report")
    body = r.long_bytes()
    signature = r.fixed(SIGNATURE_SIZE)
    r.finish()
    b = Reader(body)
    version = b.u8()
    if version not in VERSIONS:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"report version {version}")
    device_id = uuid.UUID(bytes=b.fixed(16))
    sent_at_ms, nonce, key_id = b.u64(), b.fixed(NONCE_SIZE), b.fixed(HUB_KEY_ID_SIZE)
    count = b.u16()
    if not 0 < count <= MAX_ITEMS:
        raise ProtocolError(ErrorCode.MALFORMED, f"a report holds 1 to {MAX_ITEMS} items")
    items = []
    for _ in range(count):
        tag = b.u8()
        try:
            decode = _DECODERS[ReportKind(tag)]
        except (ValueError, KeyError):
            raise ProtocolError(ErrorCode.MALFORMED, f"unknown report item kind {tag}") from None
        items.append(decode(b.long_bytes()))
    b.finish()
    if version == REPORT_VERSION and any(isinstance(i, ModelStatus) for i in items):
        raise ProtocolError(ErrorCode.MALFORMED, "model status items need report version 2")
    report = DeviceReport(device_id, sent_at_ms, nonce, key_id, tuple(items), version)
    return SignedReport(report, body, signature, hashlib.sha256(data).digest())


@dataclass(frozen=True, slots=True)
class ReportAck:
    hub_key_id: bytes
    report_digest: bytes
    known: tuple[uuid.UUID, ...]
    version: int = REPORT_VERSION
    # Version 2: the bundle digest the hub's rollouts assign (None: the installed bundle).
    assigned: bytes | None = None

    def _body(self) -> bytes:
        w = (
            Writer()
            .u8(self.version)
            .fixed(self.hub_key_id, HUB_KEY_ID_SIZE)
            .fixed(self.report_digest, 32)
            .u32(len(self.known))
        )
        for record_id in self.known:
            w.fixed(record_id.bytes, 16)
        if self.version >= ASSIGNMENT_VERSION:
            w.u8(self.assigned is not None).fixed(self.assigned or NO_DIGEST, 32)
        elif self.assigned is not None:
            raise ValueError("an ack of version 1 carries no assignment")
        return w.getvalue()

    def sign(self, key: Ed25519PrivateKey) -> bytes:
        body = self._body()
        return (
            Writer()
            .raw(ACK_MAGIC)
            .long_bytes(body)
            .fixed(key.sign(ACK_DOMAIN + body), SIGNATURE_SIZE)
            .getvalue()
        )


def verify_ack(data: bytes, key: Ed25519PublicKey, *, report: bytes) -> ReportAck:
    """The hub's ack for `report` (the bytes sent), signature checked; raises if anything is off."""
    r = Reader(data)
    if r.fixed(4) != ACK_MAGIC:
        raise ProtocolError(ErrorCode.MALFORMED, "not a device report ack")
    body = r.long_bytes()
    signature = r.fixed(SIGNATURE_SIZE)
    r.finish()
    try:
        key.verify(signature, ACK_DOMAIN + body)
    except InvalidSignature:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "device report ack signature") from None
    b = Reader(body)
    version = b.u8()
    if version not in VERSIONS:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"ack version {version}")
    key_id, digest, count = b.fixed(HUB_KEY_ID_SIZE), b.fixed(32), b.u32()
    if digest != hashlib.sha256(report).digest():
        raise ProtocolError(ErrorCode.MALFORMED, "ack answers another report")
    if count > MAX_ITEMS:
        raise ProtocolError(ErrorCode.MALFORMED, "ack lists too many ids")
    known = tuple(uuid.UUID(bytes=b.fixed(16)) for _ in range(count))
    assigned = None
    if version >= ASSIGNMENT_VERSION:
        flag, named = b.u8(), b.fixed(32)
        if flag > 1:
            raise ProtocolError(ErrorCode.MALFORMED, "ack assignment flag")
        assigned = named if flag else None
    b.finish()
    return ReportAck(key_id, digest, known, version, assigned)
