"""Collateral fetching from a PCCS served on loopback with the real sample collateral."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from attestation import DcapCollateral
from attestation.pccs import PccsClient, PccsError, raw_member

VECTORS = Path(__file__).parent / "vectors"
SAMPLE = json.loads((VECTORS / "tdx_v4_collateral.json").read_text())


def pccs_app(hits: list[str]) -> web.Application:
    """A PCCS stand-in answering the way Intel's PCCS does (v4 API), from the sample files."""

    def chain(value: str) -> str:
        return urllib.parse.quote(value)

    async def pckcrl(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(
            text=SAMPLE["pck_crl"],
            headers={"SGX-PCK-CRL-Issuer-Chain": chain(SAMPLE["pck_crl_issuer_chain"])},
        )

    async def rootcacrl(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=bytes.fromhex(SAMPLE["root_ca_crl"]))

    async def tcb(request: web.Request) -> web.Response:
        hits.append(request.path)
        assert request.query["fmspc"] == "B0C06F000000"
        # Spacing differs from the signed text on purpose: only the inner object is signed.
        body = (
            '{ "tcbInfo": '
            + SAMPLE["tcb_info"]
            + ', "signature": "'
            + SAMPLE["tcb_info_signature"]
            + '" }'
        )
        return web.Response(
            text=body, headers={"TCB-Info-Issuer-Chain": chain(SAMPLE["tcb_info_issuer_chain"])}
        )

    async def qe_identity(request: web.Request) -> web.Response:
        hits.append(request.path)
        body = (
            '{"enclaveIdentity":'
            + SAMPLE["qe_identity"]
            + ',"signature":"'
            + SAMPLE["qe_identity_signature"]
            + '"}'
        )
        return web.Response(
            text=body,
            headers={
                "SGX-Enclave-Identity-Issuer-Chain": chain(SAMPLE["qe_identity_issuer_chain"])
            },
        )

    app = web.Application()
    app.router.add_get("/sgx/certification/v4/pckcrl", pckcrl)
    app.router.add_get("/sgx/certification/v4/rootcacrl", rootcacrl)
    app.router.add_get("/tdx/certification/v4/tcb", tcb)
    app.router.add_get("/tdx/certification/v4/qe/identity", qe_identity)
    return app


@pytest.fixture
async def pccs() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []
    runner = web.AppRunner(pccs_app(hits))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


async def test_fetches_the_exact_signed_collateral_and_caches_it(
    pccs: tuple[str, list[str]],
) -> None:
    url, hits = pccs
    now = [0.0]
    async with aiohttp.ClientSession() as http:
        client = PccsClient(http, url, cache_ttl_s=60, clock=lambda: now[0])
        fetched = await client.collateral(fmspc="B0C06F000000", tee="tdx")
        assert fetched == DcapCollateral.model_validate(SAMPLE)
        assert len(hits) == 4
        await client.collateral(fmspc="b0c06f000000", tee="tdx")
        assert len(hits) == 4  # cached
        now[0] = 61.0
        await client.collateral(fmspc="B0C06F000000", tee="tdx")
        assert len(hits) == 8  # expired, fetched again


async def test_unreachable_pccs_is_a_clear_error() -> None:
    async with aiohttp.ClientSession() as http:
        client = PccsClient(http, "http://127.0.0.1:9", timeout_s=2)
        with pytest.raises(PccsError, match="cannot reach"):
            await client.collateral(fmspc="00A067110000")


def test_raw_member_keeps_the_signed_bytes() -> None:
    inner = '{"a":1,"b":"x}y\\"z","c":{"d":[1,2]}}'
    document = '{"signature":"00", "tcbInfo" :  ' + inner + "}"
    assert raw_member(document, "tcbInfo") == inner
    with pytest.raises(PccsError):
        raw_member('{"other": {}}', "tcbInfo")
