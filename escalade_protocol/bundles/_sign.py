"""Signing a bundle: write ``manifest.sig`` over the digest of the manifest as it is now."""

from __future__ import annotations

from pathlib import Path

from escalade_protocol.artifacts import MANIFEST_NAME
from escalade_protocol.bundles._format import (
    SIGNATURE_NAME,
    ManifestSignature,
    bundle_digest,
    release_key_id,
    signed_message,
)
from escalade_protocol.bundles._verify import BundleRefused, inspect_bundle
from escalade_protocol.keys import Ed25519PrivateKey


def sign_bundle(bundle_dir: Path, key: Ed25519PrivateKey) -> ManifestSignature:
    """Check the bundle's files against its manifest, then sign its digest with `key`.

    A bundle whose files do not match is never signed: the signature vouches for the files.
    """
    verdict = inspect_bundle(bundle_dir, release_keys=())
    if verdict.failures:
        first = verdict.failures[0]
        raise BundleRefused(first.code, f"not signing a damaged bundle: {verdict.summary()}")
    digest = bundle_digest((bundle_dir / MANIFEST_NAME).read_bytes())
    sig = ManifestSignature(
        key_id=release_key_id(key.public_key()),
        bundle_digest=digest,
        signature=key.sign(signed_message(digest)).hex(),
    )
    (bundle_dir / SIGNATURE_NAME).write_text(sig.model_dump_json(indent=2) + "\n")
    return sig
