"""Checking a bundle directory: pure and offline, every failed check listed (keylime-style).

`inspect_bundle(dir, release_keys=, expected_digest=)` reads the manifest, names the bundle by
its digest, checks every file against the manifest and the detached signature against the
pinned release keys. With no key pinned the signature is not required (the project's old,
unsigned bundles keep loading; the caller warns). `require_trusted` turns a verdict with a
failure into a `BundleRefused` carrying the first failure's stable code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from pydantic import ValidationError

from escalade_protocol.artifacts import (
    MANIFEST_NAME,
    ArtifactFile,
    BundleError,
    ModelManifest,
    verified_path,
)
from escalade_protocol.bundles._format import (
    SIGNATURE_NAME,
    ManifestSignature,
    bundle_digest,
    release_key_id,
    signed_message,
)
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import Ed25519PublicKey


class BundleRefused(ProtocolError, BundleError):
    """A bundle failed a check; `code` is one of the ``bundle_*`` error codes."""


@dataclass(frozen=True, slots=True)
class BundleFailure:
    code: ErrorCode
    detail: str


@dataclass(frozen=True, slots=True)
class BundleVerdict:
    digest: str | None
    manifest: ModelManifest | None
    # The pinned key whose signature verified (None: unsigned, or no key pinned).
    signer: str | None
    # False when no release key is pinned: the signature was not required.
    signature_required: bool
    failures: tuple[BundleFailure, ...]

    @property
    def trusted(self) -> bool:
        return not self.failures and self.manifest is not None and self.digest is not None

    def summary(self) -> str:
        if not self.failures:
            return "all checks passed"
        return "; ".join(f"{f.code.value}: {f.detail}" for f in self.failures)


def artifacts(manifest: ModelManifest) -> list[ArtifactFile]:
    """Every file the manifest names (the roles' files, the optional ones, the network's and
    the adapters')."""
    named: list[ArtifactFile | None] = [
        manifest.encoder,
        manifest.head,
        manifest.hub,
        manifest.calibration,
        manifest.test_split,
        manifest.calibration_split,
        manifest.router_model,
    ]
    if manifest.network is not None:
        named += [m.file for m in manifest.network.models] + [manifest.network.router]
    # Adapters are signed like the roles' files: a swapped adapter would re-map every device
    # of its source version.
    for adapter in manifest.adapters:
        named += [adapter.model, adapter.calibration]
    unique = {(f.path, f.sha256): f for f in named if f is not None}
    return list(unique.values())


def read_signature(bundle_dir: Path) -> ManifestSignature | None:
    """``manifest.sig`` parsed; None when there is none. Raises BundleRefused if it is garbage."""
    path = bundle_dir / SIGNATURE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleRefused(
            ErrorCode.BUNDLE_SIGNATURE_INVALID, f"cannot read {path}: {exc}"
        ) from None
    try:
        return ManifestSignature.model_validate_json(raw)
    except ValidationError:
        raise BundleRefused(
            ErrorCode.BUNDLE_SIGNATURE_INVALID, f"{SIGNATURE_NAME} is not a bundle signature"
        ) from None


def _check_signature(
    bundle_dir: Path, digest: str, keys: Sequence[Ed25519PublicKey]
) -> tuple[str | None, BundleFailure | None]:
    try:
        sig = read_signature(bundle_dir)
    except BundleRefused as exc:
        return None, BundleFailure(exc.code, exc.message)
    if sig is None:
        return None, BundleFailure(ErrorCode.BUNDLE_UNSIGNED, f"no {SIGNATURE_NAME}")
    pinned = {release_key_id(k): k for k in keys}
    key = pinned.get(sig.key_id)
    if key is None:
        return None, BundleFailure(
            ErrorCode.BUNDLE_UNTRUSTED_KEY, f"signed by key {sig.key_id}, which is not pinned"
        )
    if sig.bundle_digest != digest:
        return None, BundleFailure(
            ErrorCode.BUNDLE_DIGEST_MISMATCH,
            f"the signature names bundle {sig.bundle_digest[:16]}, the manifest is {digest[:16]}",
        )
    try:
        key.verify(bytes.fromhex(sig.signature), signed_message(digest))
    except InvalidSignature:
        return None, BundleFailure(
            ErrorCode.BUNDLE_SIGNATURE_INVALID, f"signature by {sig.key_id} does not verify"
        )
    return sig.key_id, None


def inspect_bundle(
    bundle_dir: Path,
    *,
    release_keys: Sequence[Ed25519PublicKey],
    expected_digest: str | None = None,
) -> BundleVerdict:
    failures: list[BundleFailure] = []
    required = bool(release_keys)
    try:
        manifest_bytes = (bundle_dir / MANIFEST_NAME).read_bytes()
        digest = bundle_digest(manifest_bytes)
    except (OSError, ValueError) as exc:
        failure = BundleFailure(ErrorCode.BUNDLE_MALFORMED, f"cannot read {MANIFEST_NAME}: {exc}")
        return BundleVerdict(None, None, None, required, (failure,))
    if expected_digest is not None and digest != expected_digest:
        failures.append(
            BundleFailure(
                ErrorCode.BUNDLE_DIGEST_MISMATCH,
                f"asked for bundle {expected_digest[:16]}, the manifest is {digest[:16]}",
            )
        )
    manifest: ModelManifest | None = None
    try:
        manifest = ModelManifest.model_validate(json.loads(manifest_bytes), strict=False)
    except ValidationError as exc:
        failures.append(BundleFailure(ErrorCode.BUNDLE_MALFORMED, f"invalid manifest: {exc}"))
    if manifest is not None:
        for artifact in artifacts(manifest):
            try:
                verified_path(bundle_dir, artifact)
            except BundleError as exc:
                failures.append(BundleFailure(ErrorCode.BUNDLE_DIGEST_MISMATCH, str(exc)))
    signer = None
    if required:
        signer, refused = _check_signature(bundle_dir, digest, release_keys)
        if refused is not None:
            failures.append(refused)
    return BundleVerdict(digest, manifest, signer, required, tuple(failures))


def require_trusted(verdict: BundleVerdict) -> tuple[str, ModelManifest]:
    """(digest, manifest) of a bundle that passed every check; raises BundleRefused if not."""
    if verdict.failures:
        first = verdict.failures[0]
        raise BundleRefused(first.code, verdict.summary())
    assert verdict.digest is not None
    assert verdict.manifest is not None
    return verdict.digest, verdict.manifest
