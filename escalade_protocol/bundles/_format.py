"""The signed bundle's names and bytes: canonical manifest bytes, the bundle digest, the
detached signature file and release key ids.

A bundle is named by ``sha256(canonical manifest bytes)``: the manifest parsed as JSON and
written again with sorted keys and no spaces, so re-indenting the file keeps the name while any
change of content (a file digest, a threshold) makes a new one. The manifest lists every
file's SHA-256, so the digest pins the whole bundle. ``manifest.sig`` beside it holds the
release key's id and an Ed25519 signature over ``SIGNATURE_DOMAIN || digest`` (32 bytes), so
the signature cannot be replayed as any other Escalade signature.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from escalade_protocol.keys import Ed25519PublicKey, public_bytes

SIGNATURE_NAME: Final = "manifest.sig"
SIGNATURE_DOMAIN: Final = b"escalade/v1/bundle-manifest\x00"
_KEY_ID_DOMAIN: Final = b"escalade/v1/release-key-id\x00"
DIGEST_PATTERN: Final = r"^[0-9a-f]{64}$"
_DIGEST_RE: Final = re.compile(DIGEST_PATTERN)


class ManifestSignature(BaseModel):
    """The content of ``manifest.sig`` (JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    format_version: Literal[1] = 1
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    bundle_digest: str = Field(pattern=DIGEST_PATTERN)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


def canonical_manifest(raw: object) -> bytes:
    """The bytes a bundle is named by: `raw` (the parsed manifest) as sorted, compact JSON."""
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def bundle_digest(manifest_bytes: bytes) -> str:
    """The bundle's name (hex SHA-256 of the canonical form of the manifest file's bytes)."""
    return hashlib.sha256(canonical_manifest(json.loads(manifest_bytes))).hexdigest()


def is_digest(text: str) -> bool:
    return _DIGEST_RE.fullmatch(text) is not None


def release_key_id(key: Ed25519PublicKey) -> str:
    """16 hex digits naming a release public key (in ``manifest.sig`` and in logs)."""
    return hashlib.sha256(_KEY_ID_DOMAIN + public_bytes(key)).hexdigest()[:16]


def signed_message(digest: str) -> bytes:
    return SIGNATURE_DOMAIN + bytes.fromhex(digest)
