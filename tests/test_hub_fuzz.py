"""Hostile input against a real hub process over loopback HTTP: every refusal must be a 4xx
JSON ``{"code", "message"}``, never a 5xx, and the hub must log no traceback for it.

The hub runs as the real CLI (``cloud_hub.cli serve``) in a child process, started once for the
module; its stderr is the log file scanned after every request. Most inputs are correctly
signed by an enrolled device, so they get past the signature check and reach decryption, the
tensor checks, the model, the poisoning checks and the database. Tables name the input classes
one by one; Hypothesis (derandomized, small budgets) covers the space between them.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import math
import os
import re
import struct
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio
from enrollment import enroll_request
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from escalade.procs import migrate_hub, module_command, run_step, service
from escalade_protocol.envelope import EnvelopeHeader, seal
from escalade_protocol.keys import Ed25519PrivateKey, X25519PublicKey
from escalade_protocol.tensor import Tensor

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    # No "explain" phase: it reruns a failing case many times over HTTP for a comment.
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# What the hub must never log for a client's input: a record at ERROR or CRITICAL (its own
# "unhandled error", aiohttp's "Unhandled exception" / "Error handling request"), a traceback,
# or the exception line that ends one. Anchored at line starts (the CLI's log format is
# "<date> <time> <LEVEL> <logger>: <message>"): text a client got into a message, escaped
# within its line, is not a problem; a line it started is.
PROBLEM = re.compile(
    r"^(Traceback \(most recent call last\)"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (ERROR|CRITICAL) "
    r"|[A-Za-z_][\w.]*(Error|Exception)\b)"
)
U64_MAX = (1 << 64) - 1
# Wire dtype codes (escalade_protocol.tensor.DTYPE_CODES), spelled out: they are the wire format.
F32_CODE, F16_CODE = 1, 2
TOKENS = 5


@dataclass(frozen=True, slots=True)
class Device:
    device_id: uuid.UUID
    key: Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes


class _Plaintext:
    """Raw bytes sealed as the payload, for tensor encodings `Tensor` itself would not make."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def encode(self) -> bytes:
        return self.data


class FuzzHub:
    def __init__(
        self,
        url: str,
        log_path: Path,
        http: aiohttp.ClientSession,
        embedding: npt.NDArray[np.float32],
    ) -> None:
        self.url, self.log_path, self.http = url, log_path, http
        self.embedding = embedding.astype(np.float32)
        self.devices: dict[str, Device] = {}
        self.profile_token = ""
        self._revoking: asyncio.Task[str] | None = None
        self._mark = 0

    async def attest(self) -> None:
        reply = await self.post("/v1/attestation", json.dumps({"nonce": os.urandom(32).hex()}))
        assert reply.status == 200, reply
        bundle = json.loads(reply.body)
        self.key_id = bytes.fromhex(bundle["hub_key_id"])
        self.hub_key = X25519PublicKey.from_public_bytes(bytes.fromhex(bundle["encryption_key"]))
        model = bundle["model"]
        self.model_id: str = model["model_id"]
        self.model_version: int = model["model_version"]
        self.wire_dtype: str = model["wire_dtype"]
        self.dim: int = model["embedding_dim"]

    async def revoked(self) -> Device:
        """The device the operator revoked (the CLI step runs while other tests do)."""
        assert self._revoking is not None
        await self._revoking
        return self.devices["revoked"]

    async def post(
        self, path: str, data: bytes | str, headers: dict[str, str] | None = None
    ) -> Reply:
        payload: object = data
        if len(data) > 256 << 10:  # aiohttp warns about (and blocks on) large raw bodies
            payload = io.BytesIO(data.encode() if isinstance(data, str) else data)
        async with self.http.post(self.url + path, data=payload, headers=headers) as response:
            return Reply(response.status, response.content_type, await response.read())

    async def enroll(self, token: str) -> Device:
        key = Ed25519PrivateKey.generate()
        reply = await self.post("/v1/enroll", enroll_request(token, key).model_dump_json())
        assert reply.status == 201, reply
        return Device(uuid.UUID(json.loads(reply.body)["device_id"]), key)

    def header(self, device: Device | uuid.UUID, **fields: object) -> EnvelopeHeader:
        values: dict[str, object] = {
            "device_id": device.device_id if isinstance(device, Device) else device,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "seq": 1,
            "timestamp_ms": time.time_ns() // 1_000_000,
            "nonce": os.urandom(16),
            "hub_key_id": self.key_id,
        }
        values.update(fields)
        return EnvelopeHeader(**values)  # type: ignore[arg-type]

    def seal(
        self,
        device: Device,
        payload: Tensor | bytes | None = None,
        /,
        *,
        signer: Device | None = None,
        **fields: object,
    ) -> bytes:
        """An envelope signed with `signer`'s (default: the device's own) key."""
        if payload is None:
            payload = Tensor.from_numpy(self.embedding, self.wire_dtype)
        sealed: Tensor = _Plaintext(payload) if isinstance(payload, bytes) else payload  # type: ignore[assignment]
        return seal(
            self.header(device, **fields),
            sealed,
            device_key=(signer or device).key,
            hub_key=self.hub_key,
        )

    def f16(self, values: npt.ArrayLike) -> Tensor:
        return Tensor.from_numpy(np.asarray(values, dtype=np.float16), "float16")

    async def burst(self, path: str, bodies: list[bytes]) -> list[Reply]:
        """POST every body on its own connection, all written in one go, so that the hub reads
        them in one event-loop iteration (and commits their records in one transaction)."""
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        streams = [await asyncio.open_connection(host, int(port)) for _ in bodies]
        for (_, writer), body in zip(streams, bodies, strict=True):
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        replies = []
        for reader, writer in streams:
            await writer.drain()
            head, _, rest = (await asyncio.wait_for(reader.read(), 30)).partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = dict(line.split(": ", 1) for line in lines[1:])
            content_type = fields.get("Content-Type", "").split(";")[0]
            replies.append(Reply(int(lines[0].split()[1]), content_type, rest))
            writer.close()
            await writer.wait_closed()
        return replies

    # -- the log -----------------------------------------------------------------------------

    def mark(self) -> None:
        self._mark = self.log_path.stat().st_size

    async def problems(self, *, wait_s: float = 0.0) -> list[str]:
        """ERROR lines and tracebacks the hub logged since `mark`."""
        if wait_s:
            await asyncio.sleep(wait_s)
        # A round trip through the hub's event loop: whatever it logs for earlier requests
        # (even after it answered them) is written by the time this is answered.
        async with self.http.get(self.url + "/v1/health") as response:
            await response.read()
        with self.log_path.open("rb") as log:
            log.seek(self._mark)
            text = log.read().decode(errors="replace")
        return [line for line in text.splitlines() if PROBLEM.match(line)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(
    bundle_dir: Path,
    clean_embedding: npt.NDArray[np.float32],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[FuzzHub]:
    root = tmp_path_factory.mktemp("fuzz-hub")
    data_dir = root / "hub"
    await migrate_hub(data_dir)
    argv = module_command(
        "cloud_hub.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--models",
        str(bundle_dir),
        "--port",
        "0",
        "--allow-simulated-tee",
        "--ready",
    )
    async with (
        service("hub", argv, log_dir=root) as process,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
    ):
        fuzz = FuzzHub(process.url, process.log_path, http, clean_embedding)
        await fuzz.attest()
        # `cloud-hub tokens create --quiet`, run TOKENS times in one interpreter: one start-up
        # instead of five (each costs ~2 s of CPU).
        out = await run_step(
            [
                sys.executable,
                "-c",
                f"import sys\nfrom cloud_hub.cli import main\nfor _ in range({TOKENS}): "
                "main(sys.argv[1:])",
                "tokens",
                "create",
                "--data-dir",
                str(data_dir),
                "--quiet",
            ],
            what="creating enrollment tokens",
        )
        tokens = out.split()
        assert len(tokens) == TOKENS, out
        for name in ("header", "payload", "neighbour", "revoked"):
            fuzz.devices[name] = await fuzz.enroll(tokens.pop())
        fuzz.profile_token = tokens.pop()
        fuzz._revoking = asyncio.create_task(
            run_step(
                module_command(
                    "cloud_hub.cli",
                    "devices",
                    "revoke",
                    str(fuzz.devices["revoked"].device_id),
                    "--data-dir",
                    str(data_dir),
                ),
                what="revoking a device",
            )
        )
        try:
            yield fuzz
        finally:
            await fuzz._revoking


def assert_refused(reply: Reply) -> None:
    assert 400 <= reply.status < 500, reply
    assert reply.content_type == "application/json", reply
    body = json.loads(reply.body)
    assert set(body) == {"code", "message"}, body
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)


def assert_answered_or_refused(reply: Reply) -> None:
    if reply.status < 400:
        assert reply.status in (200, 201), reply
    else:
        assert_refused(reply)


# -- tables: one named input class per case --------------------------------------------------


def _raw_tensor(code: int, shape: tuple[int, ...], data: bytes) -> bytes:
    """A tensor in wire format (dtype code, ndim, u32 dims, u32-prefixed data), unchecked."""
    return (
        struct.pack(">BB", code, len(shape))
        + b"".join(struct.pack(">I", d) for d in shape)
        + struct.pack(">I", len(data))
        + data
    )


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def _with(values: npt.NDArray[np.float32], index: int, value: float) -> npt.NDArray[np.float32]:
    out = values.copy()
    out[index] = value
    return out


Build = Callable[[FuzzHub], bytes]
HEADER_SIZE_AT = 4  # the envelope's u16 header length follows the 4-byte magic

ESCALATE_REFUSED: dict[str, Build] = {
    # The wire's seq is a u64; the database column is a signed 64-bit integer.
    "seq-2**63": lambda h: h.seal(h.devices["header"], seq=1 << 63),
    "seq-u64-max": lambda h: h.seal(h.devices["header"], seq=U64_MAX),
    "unknown-device": lambda h: h.seal(Device(uuid.uuid4(), Ed25519PrivateKey.generate())),
    "device-swap": lambda h: h.seal(h.devices["neighbour"], signer=h.devices["header"]),
    "wrong-hub-key": lambda h: h.seal(h.devices["header"], hub_key_id=b"\0" * 16),
    "stale-timestamp": lambda h: h.seal(
        h.devices["header"], timestamp_ms=time.time_ns() // 1_000_000 - 600_000
    ),
    "future-timestamp": lambda h: h.seal(
        h.devices["header"], timestamp_ms=time.time_ns() // 1_000_000 + 600_000
    ),
    "timestamp-0": lambda h: h.seal(h.devices["header"], timestamp_ms=0),
    "timestamp-u64-max": lambda h: h.seal(h.devices["header"], timestamp_ms=U64_MAX),
    "model-version-u32-max": lambda h: h.seal(h.devices["header"], model_version=(1 << 32) - 1),
    "model-id-long-unicode": lambda h: h.seal(
        h.devices["header"], model_id="\u00e9\U0001f600" * 5000
    ),
    "model-id-empty": lambda h: h.seal(h.devices["header"], model_id=""),
    "envelope-version-0": lambda h: h.seal(h.devices["header"], version=0),
    "envelope-version-255": lambda h: h.seal(h.devices["header"], version=255),
    "f16-nan": lambda h: h.seal(h.devices["payload"], h.f16(_with(h.embedding, 0, math.nan))),
    "f16-inf": lambda h: h.seal(h.devices["payload"], h.f16(_with(h.embedding, 3, math.inf))),
    "f16-minus-inf": lambda h: h.seal(
        h.devices["payload"], h.f16(_with(h.embedding, 5, -math.inf))
    ),
    "f16-max-everywhere": lambda h: h.seal(h.devices["payload"], h.f16(np.full(h.dim, 65504.0))),
    "f16-alternating-max": lambda h: h.seal(
        h.devices["payload"], h.f16(np.resize([65504.0, -65504.0], h.dim))
    ),
    "f16-zeros": lambda h: h.seal(h.devices["payload"], h.f16(np.zeros(h.dim))),
    "float32-payload": lambda h: h.seal(
        h.devices["payload"], Tensor.from_numpy(h.embedding, "float32")
    ),
    "dtype-code-0": lambda h: h.seal(
        h.devices["payload"], _raw_tensor(0, (h.dim,), b"\0" * 2 * h.dim)
    ),
    "dtype-code-255": lambda h: h.seal(
        h.devices["payload"], _raw_tensor(255, (h.dim,), b"\0" * 2 * h.dim)
    ),
    "zero-dim-tensor": lambda h: h.seal(h.devices["payload"], _raw_tensor(F16_CODE, (), b"\0\0")),
    "empty-tensor": lambda h: h.seal(h.devices["payload"], _raw_tensor(F16_CODE, (0,), b"")),
    "shape-1-by-dim": lambda h: h.seal(
        h.devices["payload"], _raw_tensor(F16_CODE, (1, h.dim), b"\0" * 2 * h.dim)
    ),
    "five-dims": lambda h: h.seal(
        h.devices["payload"],
        _raw_tensor(F16_CODE, (1, 1, 1, 1, h.dim), b"\0" * 2 * h.dim),
    ),
    "ndim-255": lambda h: h.seal(h.devices["payload"], bytes([F16_CODE, 255]) + b"\0" * 1024),
    "element-count-overflow": lambda h: h.seal(
        h.devices["payload"], _raw_tensor(F16_CODE, (0xFFFFFFFF,) * 4, b"")
    ),
    "tensor-data-short": lambda h: h.seal(
        h.devices["payload"], _raw_tensor(F16_CODE, (h.dim,), b"\0" * (2 * h.dim - 1))
    ),
    "tensor-trailing-byte": lambda h: h.seal(
        h.devices["payload"], h.f16(h.embedding).encode() + b"\0"
    ),
    "plaintext-empty": lambda h: h.seal(h.devices["payload"], b""),
    "plaintext-garbage": lambda h: h.seal(h.devices["payload"], b"\xff" * 100),
    "envelope-empty": lambda h: b"",
    "envelope-bad-magic": lambda h: b"ESC2" + h.seal(h.devices["header"])[4:],
    "envelope-truncated": lambda h: h.seal(h.devices["header"])[:-1],
    "envelope-trailing-byte": lambda h: h.seal(h.devices["header"]) + b"\0",
    "envelope-header-length-max": lambda h: (
        b"ESC1" + b"\xff\xff" + h.seal(h.devices["header"])[HEADER_SIZE_AT + 2 :]
    ),
    "bit-flip-header": lambda h: _flip(h.seal(h.devices["header"]), 30),
    "bit-flip-ciphertext": lambda h: _flip(h.seal(h.devices["header"]), -100),
    "bit-flip-signature": lambda h: _flip(h.seal(h.devices["header"]), -1),
    "body-2MiB": lambda h: b"\0" * (2 << 20),
}


@pytest.mark.parametrize("case", sorted(ESCALATE_REFUSED))
async def test_hostile_escalation_is_refused_cleanly(hub: FuzzHub, case: str) -> None:
    body = ESCALATE_REFUSED[case](hub)
    hub.mark()
    reply = await hub.post("/v1/escalate", body)
    assert_refused(reply)
    assert await hub.problems() == []


@pytest.mark.parametrize("seq", [0, (1 << 63) - 1], ids=["seq-0", "seq-2**63-1"])
async def test_extreme_but_representable_seq_is_answered(hub: FuzzHub, seq: int) -> None:
    hub.mark()
    reply = await hub.post("/v1/escalate", hub.seal(hub.devices["header"], seq=seq))
    assert reply.status == 200, reply
    assert await hub.problems() == []


async def test_replayed_envelope_is_refused(hub: FuzzHub) -> None:
    body = hub.seal(hub.devices["header"])
    hub.mark()
    assert (await hub.post("/v1/escalate", body)).status == 200
    replay = await hub.post("/v1/escalate", body)
    assert_refused(replay)
    assert replay.status == 409
    assert await hub.problems() == []


async def test_one_bad_row_does_not_fail_other_devices_in_its_group_commit(
    hub: FuzzHub,
) -> None:
    """Requests that arrive together share one commit: a row the database cannot store must
    cost only its own request, not the answers of the honest devices committed with it."""
    neighbour, hostile_device = hub.devices["neighbour"], hub.devices["header"]
    # Both devices are fresh in the hub's device cache, so none of the burst waits on a read.
    for device in (neighbour, hostile_device):
        assert (await hub.post("/v1/escalate", hub.seal(device))).status == 200
    bodies = [hub.seal(neighbour) for _ in range(12)]
    bodies.insert(6, hub.seal(hostile_device, seq=U64_MAX))
    hub.mark()
    replies = await hub.burst("/v1/escalate", bodies)
    statuses = [r.status for r in replies]
    assert statuses[:6] + statuses[7:] == [200] * 12, statuses
    assert_refused(replies[6])
    assert await hub.problems() == []


JSON_PATHS = ["/v1/escalate", "/v1/enroll", "/v1/attestation"]

ENCODED_BODIES: dict[str, tuple[dict[str, str], bytes]] = {
    "gzip-garbage": ({"Content-Encoding": "gzip"}, b"not gzip at all"),
    "deflate-garbage": ({"Content-Encoding": "deflate"}, b"not deflate at all"),
    "gzip-of-64MiB-zeros": (
        {"Content-Encoding": "gzip"},
        gzip.compress(b"\0" * (64 << 20), 1),
    ),
}


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize("case", sorted(ENCODED_BODIES))
async def test_undecodable_content_encoding_is_refused_cleanly(
    hub: FuzzHub, path: str, case: str
) -> None:
    headers, body = ENCODED_BODIES[case]
    hub.mark()
    reply = await hub.post(path, body, headers)
    assert_refused(reply)
    assert await hub.problems() == []


@pytest.mark.parametrize("path", JSON_PATHS)
async def test_client_vanishing_mid_body_logs_no_traceback(hub: FuzzHub, path: str) -> None:
    host, port = hub.url.removeprefix("http://").rsplit(":", 1)
    hub.mark()
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n".encode() + b'{"x'
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    assert await hub.problems(wait_s=0.2) == []


_TRUNCATED_DEFLATE = zlib.compress(b"{" * 4096)[:20]
FRAMING: dict[str, bytes] = {
    # A body that ends mid-stream fails in the parser, once the message is complete.
    "deflate-truncated": (
        b"Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(_TRUNCATED_DEFLATE)
        + _TRUNCATED_DEFLATE
    ),
    "content-encoding-br": b"Content-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
    "content-encoding-zstd": b"Content-Encoding: zstd\r\nContent-Length: 1\r\n\r\nx",
    "bad-chunk-size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "content-length-overflow": b"Content-Length: 99999999999999999999\r\n\r\n",
    "content-length-negative": b"Content-Length: -1\r\n\r\n",
    "content-length-and-chunked": (
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "nul-in-header": b"X-Fuzz: a\x00b\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(FRAMING))
async def test_malformed_http_framing_is_refused_without_traceback(hub: FuzzHub, case: str) -> None:
    """Refused by aiohttp's parser before any handler runs: a 4xx, and no traceback logged."""
    host, port = hub.url.removeprefix("http://").rsplit(":", 1)
    hub.mark()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/escalate HTTP/1.1\r\nHost: {host}\r\n".encode() + FRAMING[case])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    status = int(status_line.split()[1])
    assert 400 <= status < 500, status_line
    assert await hub.problems() == []


def _enroll_json(valid_token: str, **fields: object) -> str:
    """A well-formed, correctly signed enrollment for `valid_token`, then `fields` replaced."""
    body = json.loads(enroll_request(valid_token, Ed25519PrivateKey.generate()).model_dump_json())
    body.update(fields)
    return json.dumps(body, ensure_ascii=False)


JSON_REFUSED: dict[str, tuple[str, Callable[[], str]]] = {
    "enroll-empty": ("/v1/enroll", lambda: ""),
    "enroll-not-json": ("/v1/enroll", lambda: "not json"),
    "enroll-array": ("/v1/enroll", lambda: "[]"),
    "enroll-null": ("/v1/enroll", lambda: "null"),
    "enroll-deep-nesting": ("/v1/enroll", lambda: "[" * 100_000 + "]" * 100_000),
    "enroll-huge-number": ("/v1/enroll", lambda: '{"token": 1' + "0" * 5000 + "}"),
    "enroll-nan": ("/v1/enroll", lambda: '{"token": NaN}'),
    "enroll-unknown-token": ("/v1/enroll", lambda: _enroll_json("esc_enr_" + "x" * 43)),
    "enroll-unicode-token": ("/v1/enroll", lambda: _enroll_json("\U0001f600" * 64)),
    "enroll-token-too-long": (
        "/v1/enroll",
        lambda: _enroll_json("t" * 20, token="t" * 257),
    ),
    "enroll-token-short": ("/v1/enroll", lambda: _enroll_json("t" * 20, token="t")),
    "enroll-profile-too-long": (
        "/v1/enroll",
        lambda: _enroll_json("t" * 20, profile="p" * 65),
    ),
    "enroll-profile-object": (
        "/v1/enroll",
        lambda: _enroll_json("t" * 20, profile={"a": 1}),
    ),
    "enroll-short-key": (
        "/v1/enroll",
        lambda: _enroll_json("t" * 20, public_key="00" * 31),
    ),
    "enroll-low-order-key": (
        "/v1/enroll",
        lambda: _enroll_json("t" * 20, public_key="00" * 32),
    ),
    "enroll-odd-hex": ("/v1/enroll", lambda: _enroll_json("t" * 20, proof="abc")),
    "enroll-proof-empty": ("/v1/enroll", lambda: _enroll_json("t" * 20, proof="")),
    "enroll-extra-field": ("/v1/enroll", lambda: _enroll_json("t" * 20, device_id="x")),
    "enroll-body-2MiB": ("/v1/enroll", lambda: " " * (2 << 20)),
    "attestation-empty": ("/v1/attestation", lambda: ""),
    "attestation-short-nonce": (
        "/v1/attestation",
        lambda: json.dumps({"nonce": "00" * 31}),
    ),
    "attestation-long-nonce": (
        "/v1/attestation",
        lambda: json.dumps({"nonce": "00" * 33}),
    ),
    "attestation-nonce-int": (
        "/v1/attestation",
        lambda: '{"nonce": 1' + "0" * 400 + "}",
    ),
    "attestation-nonce-list": ("/v1/attestation", lambda: '{"nonce": [0, 1]}'),
    "attestation-nonce-null": ("/v1/attestation", lambda: '{"nonce": null}'),
    "attestation-nonce-not-hex": (
        "/v1/attestation",
        lambda: json.dumps({"nonce": "zz" * 32}),
    ),
    "attestation-lone-surrogate": ("/v1/attestation", lambda: '{"nonce": "\\ud800"}'),
    "attestation-bad-utf8": ("/v1/attestation", lambda: '{"nonce": "\xff"}'),
    "attestation-extra-field": (
        "/v1/attestation",
        lambda: json.dumps({"nonce": "00" * 32, "\u00e9": 1}),
    ),
}


@pytest.mark.parametrize("case", sorted(JSON_REFUSED))
async def test_hostile_json_is_refused_cleanly(hub: FuzzHub, case: str) -> None:
    path, body = JSON_REFUSED[case]
    hub.mark()
    data = body()
    reply = await hub.post(path, data.encode("utf-8", "surrogateescape") if data else b"")
    assert_refused(reply)
    assert await hub.problems() == []


async def test_enrolled_profile_cannot_forge_log_lines(hub: FuzzHub) -> None:
    """The profile is free text the hub logs on enrollment: it must not start a log line."""
    hub.mark()
    body = _enroll_json(hub.profile_token, profile="fuzz\nTraceback (most recent call last):")
    reply = await hub.post("/v1/enroll", body)
    assert_answered_or_refused(reply)
    assert await hub.problems() == []


# -- properties: the space between the table rows ---------------------------------------------

u64s = st.one_of(st.sampled_from([0, 1, (1 << 63) - 1, 1 << 63, U64_MAX]), st.integers(0, U64_MAX))
# One field at most is off (wrong model, version, hub key, device), and only in a third of the
# cases: the rest get past every header check, so their seq and timestamp reach the database.
wrong_field = st.one_of(
    st.fixed_dictionaries({"model_version": st.integers(0, (1 << 32) - 1)}),
    st.fixed_dictionaries({"model_id": st.text(max_size=40)}),
    st.fixed_dictionaries({"version": st.integers(0, 255)}),
    st.fixed_dictionaries({"hub_key_id": st.binary(min_size=16, max_size=16)}),
    st.fixed_dictionaries({"device": st.sampled_from(["unknown", "swap", "revoked"])}),
)
headers = st.builds(
    lambda base, wrong: {**base, **wrong},
    st.fixed_dictionaries(
        {
            "seq": u64s,
            "timestamp_offset_ms": st.one_of(
                st.integers(-59_000, 59_000),
                st.integers(-59_000, 59_000),
                st.integers(-(10**9), 10**9),
            ),
            "nonce": st.binary(min_size=16, max_size=16),
        }
    ),
    st.one_of(st.just({}), st.just({}), wrong_field),
)


@FUZZ
@given(fields=headers)
@example(fields={"seq": 1 << 63, "timestamp_offset_ms": 0, "nonce": bytes(16)})
@example(fields={"seq": U64_MAX, "timestamp_offset_ms": 0, "nonce": b"\xff" * 16})
async def test_signed_header_fields_never_cause_a_5xx(
    hub: FuzzHub, fields: dict[str, object]
) -> None:
    fields = dict(fields)
    offset = fields.pop("timestamp_offset_ms")
    assert isinstance(offset, int)
    timestamp = max(0, min(U64_MAX, time.time_ns() // 1_000_000 + offset))
    device = hub.devices["header"]
    signer = None
    match fields.pop("device", None):
        case "unknown":
            device = Device(uuid.uuid4(), device.key)
        case "swap":
            device, signer = hub.devices["neighbour"], device
        case "revoked":
            device = await hub.revoked()
    hub.mark()
    reply = await hub.post(
        "/v1/escalate",
        hub.seal(device, signer=signer, timestamp_ms=timestamp, **fields),
    )
    assert_answered_or_refused(reply)
    assert await hub.problems() == []


F16_SPECIAL = [
    0x0000,
    0x8000,
    0x0001,
    0x03FF,
    0x7BFF,
    0xFBFF,
    0x7C00,
    0xFC00,
    0x7E00,
    0xFFFF,
]


@st.composite
def plaintexts(draw: st.DrawFn, dim: int, clean: npt.NDArray[np.float32]) -> bytes:
    kind = draw(st.sampled_from(["values", "bit-patterns", "tensor-fields", "bytes"]))
    if kind == "values":  # the clean embedding, scaled and shifted, a few entries replaced
        values = clean * draw(st.floats(-4, 4)) + draw(st.floats(-2, 2))
        for index in draw(st.lists(st.integers(0, dim - 1), max_size=3)):
            values[index] = draw(st.floats(allow_nan=True, allow_infinity=True, width=16))
        return Tensor.from_numpy(values.astype(np.float16), "float16").encode()
    if kind == "bit-patterns":  # any float16 bit patterns: subnormals, infinities, NaNs
        words = draw(
            st.lists(
                st.one_of(st.sampled_from(F16_SPECIAL), st.integers(0, 0xFFFF)),
                min_size=dim,
                max_size=dim,
            )
        )
        return _raw_tensor(F16_CODE, (dim,), struct.pack(f"<{dim}H", *words))
    if kind == "tensor-fields":  # dtype code, shape and data length chosen independently
        code = draw(st.one_of(st.sampled_from([F32_CODE, F16_CODE]), st.integers(0, 255)))
        dims = st.one_of(
            st.sampled_from([0, 1, dim, 2 * dim, 0xFFFFFFFF]),
            st.integers(0, (1 << 32) - 1),
        )
        shape = tuple(draw(st.lists(dims, max_size=6)))
        count = math.prod(shape)
        size = (
            draw(st.sampled_from([count * 2, count * 4, count * 2 + 1, 0])) if count < 4096 else 0
        )
        return _raw_tensor(code, shape, bytes(size)) + draw(st.binary(max_size=2))
    return draw(st.binary(max_size=200))


@FUZZ
@given(data=st.data())
async def test_signed_payloads_never_cause_a_5xx(hub: FuzzHub, data: st.DataObject) -> None:
    plaintext = data.draw(plaintexts(hub.dim, hub.embedding))
    hub.mark()
    reply = await hub.post("/v1/escalate", hub.seal(hub.devices["payload"], plaintext))
    assert_answered_or_refused(reply)
    assert await hub.problems() == []


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "truncate", "append", "delete"]),
        st.integers(0, 1 << 16),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(edits=mutations)
async def test_mutated_envelopes_never_cause_a_5xx(
    hub: FuzzHub, edits: list[tuple[str, int, int]]
) -> None:
    body = bytearray(hub.seal(hub.devices["header"]))
    for op, where, value in edits:
        at = where % max(1, len(body))
        if op == "flip" and body:
            body[at] ^= 1 << (value % 8)
        elif op == "set" and body:
            body[at] = value
        elif op == "truncate":
            del body[at:]
        elif op == "append":
            body += bytes([value]) * (where % 64 + 1)
        elif op == "delete" and body:
            del body[at]
    hub.mark()
    reply = await hub.post("/v1/escalate", bytes(body))
    assert_answered_or_refused(reply)
    assert await hub.problems() == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
hexish = st.one_of(
    st.binary(max_size=80).map(bytes.hex),
    st.text(alphabet="0123456789abcdefABCDEF \n", max_size=80),
)
json_fields = st.one_of(json_values, hexish, st.text(max_size=300))
json_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "token": json_fields,
            "public_key": json_fields,
            "proof": json_fields,
            "profile": json_fields,
            "nonce": json_fields,
        },
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)


@FUZZ
@given(path=st.sampled_from(["/v1/enroll", "/v1/attestation"]), body=json_bodies)
async def test_json_bodies_never_cause_a_5xx(hub: FuzzHub, path: str, body: str) -> None:
    hub.mark()
    reply = await hub.post(path, body.encode("utf-8", "surrogateescape"))
    assert_answered_or_refused(reply)
    assert await hub.problems() == []


# Last: the operator's revocation (a CLI step) runs in the background until here.
async def test_revoked_device_is_refused(hub: FuzzHub) -> None:
    body = hub.seal(await hub.revoked())
    hub.mark()
    reply = await hub.post("/v1/escalate", body)
    assert_refused(reply)
    assert reply.status == 403
    assert await hub.problems() == []
