"""The hub's bundle shelf: verified bundles on disk, one directory per digest.

An upload is a tar archive of a bundle directory (``tar -C BUNDLE -cf - .``). Only the files
its manifest names (and ``manifest.json``, ``manifest.sig``) are taken out of it, as regular
files, into a staging directory; the staged bundle is checked against the pinned release keys
and moved to ``<root>/<digest>`` in one rename, so a refused upload leaves nothing behind and
a bundle on the shelf has always passed every check.
"""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from escalade_protocol.artifacts import MANIFEST_NAME, ModelManifest
from escalade_protocol.bundles import (
    SIGNATURE_NAME,
    BundleRefused,
    artifacts,
    inspect_bundle,
    is_digest,
    require_trusted,
)
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PublicKey

log = logging.getLogger("cloud_hub.rollouts")
# The largest bundle accepted (the digits bundle is ~0.4 MB; Fashion-MNIST's ~3 MB).
MAX_BUNDLE_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class Shelved:
    digest: str
    manifest: ModelManifest
    signer: str | None
    size_bytes: int


def _member_name(name: str) -> str:
    return str(PurePosixPath(name.removeprefix("./")))


class BundleShelf:
    def __init__(self, root: Path, release_keys: Sequence[Ed25519PublicKey]) -> None:
        self.root = root
        self.release_keys = tuple(release_keys)
        if not self.release_keys:
            log.warning(
                "no release key pinned (release_keys): bundles are checked against their "
                "manifests only, unsigned ones accepted"
            )

    def incoming(self) -> Path:
        """A fresh path for an upload to be written to (blocking)."""
        staging = self.root / ".incoming"
        staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        return staging / f"{uuid.uuid4()}.tar"

    def bundle_dir(self, digest: str) -> Path | None:
        if not is_digest(digest):
            return None
        path = self.root / digest
        return path if (path / MANIFEST_NAME).is_file() else None

    def file(self, digest: str, name: str) -> Path | None:
        """A file of a shelved bundle, by its path in the bundle; None if there is none."""
        base = self.bundle_dir(digest)
        if base is None:
            return None
        path = (base / name).resolve()
        if base.resolve() not in path.parents or not path.is_file():
            return None
        return path

    def accept(self, archive: Path) -> Shelved:
        """Check the uploaded tar `archive` and shelve it (blocking); raises BundleRefused."""
        staging = archive.with_suffix("")
        try:
            size = self._extract(archive, staging)
            verdict = inspect_bundle(staging, release_keys=self.release_keys)
            digest, manifest = require_trusted(verdict)
            target = self.root / digest
            try:
                staging.rename(target)
            except OSError:
                if not (target / MANIFEST_NAME).is_file():
                    raise
                # Shelved already (by an earlier or a concurrent upload): the same bytes.
            return Shelved(digest, manifest, verdict.signer, size)
        finally:
            archive.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)

    def _extract(self, archive: Path, staging: Path) -> int:
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                members = {_member_name(m.name): m for m in tar.getmembers()}
                manifest = self._read(tar, members, MANIFEST_NAME)
                try:
                    parsed = ModelManifest.model_validate(json.loads(manifest), strict=False)
                except ValueError as exc:
                    raise BundleRefused(
                        ErrorCode.BUNDLE_MALFORMED, f"invalid manifest: {exc}"
                    ) from None
                names = [a.path for a in artifacts(parsed)]
                if SIGNATURE_NAME in members:
                    names.append(SIGNATURE_NAME)
                staging.mkdir(mode=0o700)
                (staging / MANIFEST_NAME).write_bytes(manifest)
                size = len(manifest)
                for name in names:
                    target = (staging / name).resolve()
                    if staging.resolve() not in target.parents:
                        raise BundleRefused(
                            ErrorCode.BUNDLE_MALFORMED, f"path escapes the bundle: {name}"
                        )
                    data = self._read(tar, members, _member_name(name))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                    size += len(data)
                return size
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BundleRefused(
                ErrorCode.BUNDLE_MALFORMED, f"not a bundle archive: {exc}"
            ) from None

    @staticmethod
    def _read(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
        member = members.get(name)
        if member is None or not member.isfile():
            raise BundleRefused(ErrorCode.BUNDLE_MALFORMED, f"the archive lacks {name}")
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read()
