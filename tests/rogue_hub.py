"""A rogue on the LAN: a plain HTTP server announcing itself as an Escalade hub.

Run as a child process (in a test's network namespace). Modes:
- ``bad-evidence``: its bundle names keys that its evidence does not bind (a consistent
  `kfp`, evidence that cannot verify);
- ``lying-kfp``: genuine simulated evidence for its own keys, announced under a `kfp` that is
  not theirs (pointing agents at another hub's identity).
Every request to ``/v1/escalate`` is appended to the ``--hits`` file: a test asserts it stays
empty. Prints ``READY <url>`` once the announcement is registered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from aiohttp import web

from attestation import AttestationBundle, SimulatedAttester, code_measurement
from cloud_hub.identity import HubIdentity
from cloud_hub.serving import HubModel
from edge_agent.discovery.mdns import MdnsSettings, open_zeroconf, register, service_info
from edge_agent.discovery.txt import HUB_SERVICE, HubAdvert
from escalade_protocol.keys import X25519PrivateKey, hub_key_id, public_bytes
from escalade_protocol.messages import AttestationRequest


def _bundle(
    identity: HubIdentity, model: HubModel, nonce: bytes, other: bytes | None
) -> AttestationBundle:
    bundle = identity.attest(SimulatedAttester(code_measurement()), nonce, model.info)
    if other is None:
        return bundle
    # Keys the evidence does not bind, under a key id that matches them: only appraisal fails.
    return bundle.model_copy(
        update={
            "encryption_key": other,
            "hub_key_id": hub_key_id(other, identity.signing_public),
        }
    )


def _append(path: Path, line: str) -> None:
    with path.open("a") as out:
        out.write(line)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("bad-evidence", "lying-kfp"), required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--interface", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--hits", required=True)
    args = parser.parse_args()
    identity = HubIdentity.generate()
    model = HubModel(Path(args.models))
    hits = Path(args.hits)
    other = None
    if args.mode == "bad-evidence":
        other = public_bytes(X25519PrivateKey.generate().public_key())
        kfp = hub_key_id(other, identity.signing_public)
    else:
        kfp = os.urandom(16)

    async def attestation(request: web.Request) -> web.Response:
        body = AttestationRequest.model_validate_json(await request.read())
        bundle = _bundle(identity, model, body.nonce, other)
        return web.json_response(text=bundle.model_dump_json())

    async def hit(request: web.Request) -> web.Response:
        # What a rogue must never get: an embedding, or an enrollment token.
        line = f"{request.path}: {len(await request.read())} bytes\n"
        await asyncio.to_thread(_append, hits, line)
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/v1/attestation", attestation)
    app.router.add_post("/v1/escalate", hit)
    app.router.add_post("/v1/enroll", hit)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.host, 0)
    await site.start()
    port = runner.addresses[0][1]
    advert = HubAdvert(
        txtvers="1", id=f"rogue-{args.mode}", api="/v1", tee="simulated", kfp=kfp.hex()
    )
    zc = open_zeroconf(MdnsSettings(interfaces=(args.interface,)))
    info = service_info(
        HUB_SERVICE, f"rogue-{args.mode}", port=port, txt=advert.txt(), addresses=[args.host]
    )
    await register(zc, info)
    print(f"READY http://{args.host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await zc.async_close()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
