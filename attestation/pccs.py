"""Fetching DCAP collateral from a PCCS (or Intel's PCS), cached: the async step that comes
before verification, never inside it.

Endpoints (API v4): ``{base}/{sgx|tdx}/certification/v4/tcb?fmspc=...`` and ``.../qe/identity``
answer JSON whose inner object (``tcbInfo`` / ``enclaveIdentity``) is what Intel signed, byte
for byte; we keep that exact text rather than re-serializing it. ``.../pckcrl?ca=...`` and
``.../rootcacrl`` answer CRLs; issuer chains come URL-encoded in response headers.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp

from attestation.evidence import DcapCollateral

DEFAULT_CACHE_TTL_S = 3600.0


class PccsError(Exception):
    """The collateral service could not be reached or answered something unusable."""


def raw_member(document: str, key: str) -> str:
    """The exact text of the JSON object under `key` at the top level of `document`."""
    parsed = json.loads(document)
    if not isinstance(parsed, dict) or not isinstance(parsed.get(key), dict):
        raise PccsError(f"answer has no {key!r} object")
    start = document.find("{", document.find(f'"{key}"') + len(key) + 2)
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(document)):
        char = document[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                text = document[start : index + 1]
                if json.loads(text) != parsed[key]:
                    raise PccsError(f"could not isolate the {key!r} object")
                return text
    raise PccsError(f"unterminated {key!r} object")


def _crl_hex(body: bytes) -> str:
    """PCCS answers hex text; Intel's PCS answers DER or PEM. Normalize to hex DER."""
    text = body.strip()
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return body.hex()
    if decoded.startswith("-----BEGIN"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        return x509.load_pem_x509_crl(text).public_bytes(Encoding.DER).hex()
    try:
        bytes.fromhex(decoded)
    except ValueError:
        return body.hex()
    return decoded.lower()


@dataclass(frozen=True, slots=True)
class _Cached:
    expires: float
    collateral: DcapCollateral


class PccsClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._ttl = cache_ttl_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._cache: dict[tuple[str, str, str], _Cached] = {}

    async def collateral(
        self,
        *,
        fmspc: str,
        ca: Literal["processor", "platform"] = "processor",
        tee: Literal["sgx", "tdx"] = "sgx",
    ) -> DcapCollateral:
        key = (fmspc.lower(), ca, tee)
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached.expires:
            return cached.collateral
        collateral = await self._fetch(fmspc=fmspc, ca=ca, tee=tee)
        self._cache[key] = _Cached(self._clock() + self._ttl, collateral)
        return collateral

    async def _get(
        self, path: str, params: dict[str, str] | None = None
    ) -> tuple[bytes, dict[str, str]]:
        url = f"{self._base}/{path}"
        try:
            async with self._http.get(url, params=params, timeout=self._timeout) as response:
                body = await response.read()
                if response.status != 200:
                    raise PccsError(f"{url} answered HTTP {response.status}")
                return body, {k.lower(): v for k, v in response.headers.items()}
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PccsError(f"cannot reach {url}: {exc!r}") from exc

    @staticmethod
    def _chain(headers: dict[str, str], *names: str) -> str:
        for name in names:
            if name.lower() in headers:
                return urllib.parse.unquote(headers[name.lower()])
        raise PccsError(f"answer lacks the {names[0]} header")

    async def _fetch(self, *, fmspc: str, ca: str, tee: str) -> DcapCollateral:
        pck_crl, pck_headers = await self._get("sgx/certification/v4/pckcrl", {"ca": ca})
        root_crl, _ = await self._get("sgx/certification/v4/rootcacrl")
        tcb_body, tcb_headers = await self._get(f"{tee}/certification/v4/tcb", {"fmspc": fmspc})
        qe_body, qe_headers = await self._get(f"{tee}/certification/v4/qe/identity")
        try:
            tcb_text, qe_text = tcb_body.decode(), qe_body.decode()
            tcb_signature = str(json.loads(tcb_text)["signature"])
            qe_signature = str(json.loads(qe_text)["signature"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise PccsError(f"malformed TCB info or QE identity answer: {exc!r}") from exc
        return DcapCollateral(
            pck_crl_issuer_chain=self._chain(pck_headers, "SGX-PCK-CRL-Issuer-Chain"),
            root_ca_crl=_crl_hex(root_crl),
            pck_crl=_crl_hex(pck_crl),
            tcb_info_issuer_chain=self._chain(
                tcb_headers, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"
            ),
            tcb_info=raw_member(tcb_text, "tcbInfo"),
            tcb_info_signature=tcb_signature,
            qe_identity_issuer_chain=self._chain(qe_headers, "SGX-Enclave-Identity-Issuer-Chain"),
            qe_identity=raw_member(qe_text, "enclaveIdentity"),
            qe_identity_signature=qe_signature,
        )


@dataclass(frozen=True, slots=True)
class PlatformId:
    """What selects a platform's collateral: its FMSPC, PCK CA and TEE, read from a quote."""

    fmspc: str
    ca: Literal["processor", "platform"]
    tee: Literal["sgx", "tdx"]


def platform_of(quote: bytes) -> PlatformId:
    """Read FMSPC, PCK CA type and TEE from a quote's own PCK certificate."""
    from attestation.dcap import parse_pck_extensions, parse_quote
    from attestation.dcap.certs import parse_pem_chain

    parsed = parse_quote(quote)
    pck = parse_pem_chain(parsed.pck_chain_pem)[0]
    issuer = pck.issuer.rfc4514_string()
    return PlatformId(
        fmspc=parse_pck_extensions(pck).fmspc.hex().upper(),
        ca="platform" if "Platform" in issuer else "processor",
        tee="tdx" if parsed.tee_type == "tdx" else "sgx",
    )
