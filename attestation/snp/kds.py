"""Fetching SNP certificates from AMD's Key Distribution Service, cached on disk: the async
step before verification, never inside it (as `attestation.pccs` is for DCAP).

Endpoints (KDS interface spec)::

    {base}/vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..   VCEK, DER
    {base}/vcek/v1/{product}/cert_chain                                       ASK + ARK, PEM
    {base}/vlek/v1/{product}/cert_chain                                       ASVK + ARK, PEM
    {base}/vcek/v1/{product}/crl                                              CRL, DER

VLEKs are provisioned by the cloud provider, not served by KDS: they come from the host (the
guest's extended report) or a file. Everything fetched is signed by AMD, so the cache and the
offline directory need no protection beyond what an attacker could forge anyway (nothing: the
verifier checks every signature against the pinned ARKs). A VCEK or chain never changes for
its name, so cached copies are kept; a CRL is re-fetched after `crl_ttl_s`.

Offline mode (`base_url=None`) reads the same file names from `cache_dir` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from attestation.snp.errors import KdsError
from attestation.snp.report import Product, SigningKey, SnpReport, TcbVersion

AMD_KDS_URL = "https://kdsintf.amd.com"
DEFAULT_CRL_TTL_S = 24 * 3600.0
TURIN_HWID_LEN = 8  # Turin VCEKs are looked up by the first 8 bytes of CHIP_ID


@dataclass(frozen=True, slots=True)
class SnpCertificates:
    """What `verify_report` needs besides the report."""

    vcek: bytes  # DER
    chain: bytes  # PEM: ASK or ASVK, then ARK
    crl: bytes | None  # DER


def vcek_path(product: Product, chip_id: bytes, tcb: TcbVersion) -> str:
    hwid = chip_id[:TURIN_HWID_LEN] if product is Product.TURIN else chip_id
    query = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if product is Product.TURIN:
        query = f"fmcSPL={tcb.fmc or 0}&" + query
    return f"vcek/v1/{product.value}/{hwid.hex()}?{query}"


def _cache_name(path: str) -> str:
    return path.replace("/", "_").replace("?", "_").replace("&", "_").replace("=", "-")


class KdsClient:
    def __init__(
        self,
        http: aiohttp.ClientSession | None,
        *,
        base_url: str | None = AMD_KDS_URL,
        cache_dir: Path | None = None,
        crl_ttl_s: float = DEFAULT_CRL_TTL_S,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if base_url is None and cache_dir is None:
            raise ValueError("offline KDS access needs a cache_dir to read from")
        if base_url is not None and http is None:
            raise ValueError("fetching from KDS needs an HTTP session")
        self._http = http
        self._base = base_url.rstrip("/") if base_url else None
        self._cache_dir = cache_dir
        self._crl_ttl = crl_ttl_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock

    async def certificates(
        self, report: SnpReport, product: Product, *, vlek: bytes | None = None
    ) -> SnpCertificates:
        """VCEK (or the given VLEK), its chain and the product's CRL for this report."""
        if report.signing_key == SigningKey.VLEK:
            if vlek is None:
                raise KdsError("the report is signed by a VLEK, which KDS does not serve")
            leaf, chain_kind = vlek, "vlek"
        else:
            tcb = report.reported_tcb(product)
            leaf = await self.get(vcek_path(product, report.chip_id, tcb))
            chain_kind = "vcek"
        chain = await self.get(f"{chain_kind}/v1/{product.value}/cert_chain")
        crl = await self.get(f"vcek/v1/{product.value}/crl", max_age_s=self._crl_ttl)
        return SnpCertificates(vcek=leaf, chain=chain, crl=crl)

    async def get(self, path: str, *, max_age_s: float | None = None) -> bytes:
        """One KDS document, from the disk cache when fresh enough, else fetched and cached."""
        cached = self._cache_dir / _cache_name(path) if self._cache_dir else None
        if cached is not None and cached.exists():
            age = self._clock() - cached.stat().st_mtime
            if self._base is None or max_age_s is None or age < max_age_s:
                return cached.read_bytes()
        if self._base is None:
            raise KdsError(f"offline, and {cached} is not there (fetch it from KDS: {path})")
        body = await self._fetch(f"{self._base}/{path}")
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            partial.write_bytes(body)
            partial.replace(cached)  # atomic: a reader never sees half a certificate
        return body

    async def _fetch(self, url: str) -> bytes:
        assert self._http is not None
        try:
            async with self._http.get(url, timeout=self._timeout) as response:
                body = await response.read()
                if response.status != 200:
                    raise KdsError(f"{url} answered HTTP {response.status}")
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KdsError(f"cannot reach {url}: {exc!r}") from exc
