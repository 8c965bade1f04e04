"""Signed, digest-addressed model bundles: the pure checks hub and agent share.

    BundleRefused (ProtocolError, BundleError): a check failed; codes ``bundle_*``

`inspect_bundle` lists every failed check; `require_trusted` raises on the first. `sign_bundle`
writes ``manifest.sig``. Release keys: `write_release_key`, `parse_release_key(s)`.
"""

from escalade_protocol.bundles._format import (
    DIGEST_PATTERN,
    SIGNATURE_NAME,
    ManifestSignature,
    bundle_digest,
    canonical_manifest,
    is_digest,
    release_key_id,
)
from escalade_protocol.bundles._keys import (
    load_release_private,
    parse_release_key,
    parse_release_keys,
    write_release_key,
)
from escalade_protocol.bundles._sign import sign_bundle
from escalade_protocol.bundles._verify import (
    BundleFailure,
    BundleRefused,
    BundleVerdict,
    artifacts,
    inspect_bundle,
    read_signature,
    require_trusted,
)

__all__ = [
    "DIGEST_PATTERN",
    "SIGNATURE_NAME",
    "BundleFailure",
    "BundleRefused",
    "BundleVerdict",
    "ManifestSignature",
    "artifacts",
    "bundle_digest",
    "canonical_manifest",
    "inspect_bundle",
    "is_digest",
    "load_release_private",
    "parse_release_key",
    "parse_release_keys",
    "read_signature",
    "release_key_id",
    "require_trusted",
    "sign_bundle",
    "write_release_key",
]
