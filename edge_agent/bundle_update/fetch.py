"""Downloading an assigned bundle from the hub: resumable, digest-checked, signature-checked.

Files land in ``<data dir>/bundles/<digest>.partial/`` as ``<name>.part`` while they arrive,
chunk by chunk, so an interrupted download resumes with an HTTP Range request where it
stopped. The manifest comes first and must have the assigned digest (nothing else is fetched
otherwise); each file must match the manifest's SHA-256; then the whole bundle is checked
against the pinned release keys and renamed to ``<data dir>/bundles/<digest>`` in one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import aiohttp

from escalade_protocol.artifacts import MANIFEST_NAME, ModelManifest
from escalade_protocol.bundles import (
    SIGNATURE_NAME,
    BundleRefused,
    artifacts,
    bundle_digest,
    inspect_bundle,
    require_trusted,
)
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PublicKey

CHUNK = 1 << 20


class FetchInterrupted(Exception):
    """The hub could not be reached or stopped mid-file: try again later, from where it was."""


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path
    # Bytes received in this call, and files continued from an earlier, interrupted call.
    received: int
    resumed: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class BundleFetcher:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        root: Path,
        release_keys: Sequence[Ed25519PublicKey],
        *,
        timeout_s: float = 60.0,
    ) -> None:
        self._http = http
        self.root = root
        self._keys = tuple(release_keys)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_s, connect=timeout_s)

    async def fetch(self, base_url: str, digest: str) -> Fetched:
        """The bundle `digest`, checked, in its final directory (fetched if not there yet)."""
        final = self.root / digest
        if (final / MANIFEST_NAME).is_file():
            await asyncio.to_thread(self._check, final, digest)
            return Fetched(final, 0, 0)
        partial = self.root / f"{digest}.partial"
        await asyncio.to_thread(partial.mkdir, parents=True, exist_ok=True, mode=0o700)
        url = f"{base_url.rstrip('/')}/v1/bundles/{digest}/"
        received, resumed = 0, 0
        manifest_bytes = await self._small(url + MANIFEST_NAME)
        if manifest_bytes is None:
            # Not refused: another replica may keep it, or an upload may still be on its way.
            raise FetchInterrupted(f"the hub at {base_url} does not keep bundle {digest[:16]}")
        try:
            named = bundle_digest(manifest_bytes)
            manifest = ModelManifest.model_validate(json.loads(manifest_bytes), strict=False)
        except ValueError as exc:
            raise BundleRefused(ErrorCode.BUNDLE_MALFORMED, f"invalid manifest: {exc}") from None
        if named != digest:
            # Nothing more is fetched for a manifest that is not the one assigned.
            raise BundleRefused(
                ErrorCode.BUNDLE_DIGEST_MISMATCH,
                f"the hub served manifest {named[:16]} for bundle {digest[:16]}",
            )
        await asyncio.to_thread((partial / MANIFEST_NAME).write_bytes, manifest_bytes)
        signature = await self._small(url + SIGNATURE_NAME)
        if signature is not None:
            await asyncio.to_thread((partial / SIGNATURE_NAME).write_bytes, signature)
        for artifact in artifacts(manifest):
            target = (partial / artifact.path).resolve()
            if partial.resolve() not in target.parents:
                raise BundleRefused(ErrorCode.BUNDLE_MALFORMED, f"path escapes: {artifact.path}")
            if target.is_file() and await asyncio.to_thread(_sha256, target) == artifact.sha256:
                continue
            got, continued = await self._file(url + artifact.path, target, artifact.sha256)
            received += got
            resumed += continued
        await asyncio.to_thread(self._check, partial, digest)
        await asyncio.to_thread(partial.rename, final)
        return Fetched(final, received, resumed)

    def _check(self, bundle: Path, digest: str) -> None:
        verdict = inspect_bundle(bundle, release_keys=self._keys, expected_digest=digest)
        if verdict.failures:
            # A refused bundle is not kept: the next assignment starts from nothing.
            shutil.rmtree(bundle, ignore_errors=True)
        require_trusted(verdict)

    async def _small(self, url: str) -> bytes | None:
        try:
            async with self._http.get(url, timeout=self._timeout) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise FetchInterrupted(f"GET {url}: HTTP {response.status}")
                return await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FetchInterrupted(f"GET {url}: {type(exc).__name__}: {exc}") from None

    async def _file(self, url: str, target: Path, sha256: str) -> tuple[int, int]:
        """Download `url` to `target`, continuing ``target.part``; (bytes received, resumed)."""
        part = target.with_name(target.name + ".part")
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        received = 0
        try:
            async with self._http.get(url, headers=headers, timeout=self._timeout) as response:
                if response.status == 416:
                    # Nothing left to send: the part is whole (or longer, caught by the digest).
                    pass
                elif response.status in (200, 206):
                    resumed = response.status == 206
                    f: BinaryIO
                    with part.open("ab" if resumed else "wb") as f:
                        async for chunk in response.content.iter_chunked(CHUNK):
                            await asyncio.to_thread(f.write, chunk)
                            received += len(chunk)
                    if not resumed:
                        have = 0
                else:
                    raise FetchInterrupted(f"GET {url}: HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FetchInterrupted(f"GET {url}: {type(exc).__name__}: {exc}") from None
        if await asyncio.to_thread(_sha256, part) != sha256:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise BundleRefused(
                ErrorCode.BUNDLE_DIGEST_MISMATCH, f"{target.name} does not match the manifest"
            )
        await asyncio.to_thread(part.rename, target)
        return received, int(have > 0)
