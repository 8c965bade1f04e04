"""A PCCS stand-in on loopback that answers the way Intel's PCCS does (API v4)."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiohttp import web


def pccs_app(collateral: Mapping[str, str], hits: list[str]) -> web.Application:
    """Serve `collateral` (the fields of the shared samples) for any FMSPC, SGX or TDX."""

    def chain(name: str) -> str:
        return urllib.parse.quote(collateral[name])

    async def pckcrl(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(
            text=collateral["pck_crl"],
            headers={"SGX-PCK-CRL-Issuer-Chain": chain("pck_crl_issuer_chain")},
        )

    async def rootcacrl(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=bytes.fromhex(collateral["root_ca_crl"]))

    async def tcb(request: web.Request) -> web.Response:
        hits.append(request.path)
        # Spacing differs from the signed text on purpose: only the inner object is signed.
        body = (
            '{ "tcbInfo": '
            + collateral["tcb_info"]
            + ', "signature": "'
            + collateral["tcb_info_signature"]
            + '" }'
        )
        return web.Response(
            text=body, headers={"TCB-Info-Issuer-Chain": chain("tcb_info_issuer_chain")}
        )

    async def qe_identity(request: web.Request) -> web.Response:
        hits.append(request.path)
        body = (
            '{"enclaveIdentity":'
            + collateral["qe_identity"]
            + ',"signature":"'
            + collateral["qe_identity_signature"]
            + '"}'
        )
        return web.Response(
            text=body,
            headers={"SGX-Enclave-Identity-Issuer-Chain": chain("qe_identity_issuer_chain")},
        )

    app = web.Application()
    app.router.add_get("/sgx/certification/v4/pckcrl", pckcrl)
    app.router.add_get("/sgx/certification/v4/rootcacrl", rootcacrl)
    for tee in ("sgx", "tdx"):
        app.router.add_get(f"/{tee}/certification/v4/tcb", tcb)
        app.router.add_get(f"/{tee}/certification/v4/qe/identity", qe_identity)
    return app


@asynccontextmanager
async def serve_pccs(collateral: Mapping[str, str]) -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []
    runner = web.AppRunner(pccs_app(collateral, hits))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()
