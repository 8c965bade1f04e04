"""Collateral fetching from a PCCS served on loopback with the real sample collateral."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from fake_pccs import serve_pccs

from attestation import DcapCollateral
from attestation.pccs import PccsClient, PccsError, raw_member

VECTORS = Path(__file__).parent / "vectors"
SAMPLE = json.loads((VECTORS / "tdx_v4_collateral.json").read_text())


@pytest.fixture
async def pccs() -> AsyncIterator[tuple[str, list[str]]]:
    async with serve_pccs(SAMPLE) as served:
        yield served


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
        assert "/tdx/certification/v4/tcb" in hits
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
