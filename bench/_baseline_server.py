"""The baseline for `bench/escalation.py`: the escalation's essential work, no framework.

A bare aiohttp server that, per POST, verifies the device's Ed25519 signature, opens the HPKE
payload, runs the hub's ONNX model (one thread) and signs a reply bound to the request by its
SHA-256. No database, no replay check, no envelope or tensor parsing, no thread hop: whatever
the hub spends beyond this is the framework's cost, which is what the benchmark's ratios show.

Request:  u16 header length | header | HPKE enc || ciphertext | 64-byte signature over the rest
Reply:    SHA-256(request) | label u16 | float32 probabilities | padding | 64-byte signature

Usage: python bench/_baseline_server.py --model HUB.onnx --device-key HEX --reply-bytes N
[--wire-dtype float32]
Prints ``READY <url>`` once listening; GET /keys gives the X25519 and Ed25519 public keys.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal

import numpy as np
import onnxruntime as ort
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
SIGNATURE_SIZE = 64


def make_app(
    session: ort.InferenceSession, device_key: Ed25519PublicKey, wire_dtype: str, reply_bytes: int
) -> web.Application:
    enc_key = X25519PrivateKey.generate()
    sig_key = Ed25519PrivateKey.generate()
    raw = (Encoding.Raw, PublicFormat.Raw)
    keys = {
        "encryption_key": enc_key.public_key().public_bytes(*raw).hex(),
        "signing_key": sig_key.public_key().public_bytes(*raw).hex(),
    }
    wire = np.dtype(wire_dtype).newbyteorder("<")
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[-1].name

    async def handle_keys(_request: web.Request) -> web.Response:
        return web.json_response(keys)

    async def handle_escalate(request: web.Request) -> web.Response:
        body = await request.read()
        signed, signature = body[:-SIGNATURE_SIZE], body[-SIGNATURE_SIZE:]
        try:
            device_key.verify(signature, signed)
        except InvalidSignature:
            return web.Response(status=403, text="bad signature")
        header_len = int.from_bytes(body[:2], "big")
        header = body[2 : 2 + header_len]
        plaintext = SUITE.decrypt(signed[2 + header_len :], enc_key, info=header)
        embedding = np.frombuffer(plaintext, dtype=wire).astype(np.float32).reshape(1, -1)
        (probabilities,) = session.run([output_name], {input_name: embedding})
        probs = np.asarray(probabilities[0], dtype="<f4")
        reply = (
            hashlib.sha256(body).digest() + int(probs.argmax()).to_bytes(2, "big") + probs.tobytes()
        )
        # Padding makes the reply as long as the hub's answer, so both move the same bytes.
        reply = reply.ljust(reply_bytes - SIGNATURE_SIZE, b"\0")
        return web.Response(body=reply + sig_key.sign(reply))

    app = web.Application()
    app.router.add_get("/keys", handle_keys)
    app.router.add_post("/escalate", handle_escalate)
    return app


async def serve(args: argparse.Namespace) -> None:
    options = ort.SessionOptions()
    # The hub's settings (cloud_hub/serving.py): one intra-op and one inter-op thread.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        args.model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    device_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(args.device_key))
    runner = web.AppRunner(
        make_app(session, device_key, args.wire_dtype, args.reply_bytes), access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    print(f"READY http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the hub's ONNX model")
    parser.add_argument("--device-key", required=True, help="raw Ed25519 public key, hex")
    parser.add_argument("--wire-dtype", default="float32", help="embedding dtype on the wire")
    parser.add_argument("--reply-bytes", type=int, required=True, help="reply length to match")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the same loop the hub runs on, so that the ratio compares the work, not the loop",
    )
    args = parser.parse_args()
    if args.event_loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
