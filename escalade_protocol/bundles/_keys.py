"""Release keys: the private key in a PEM file (mode 0600), the public key as 64 hex digits
(what `release_keys` in hub and agent config pins, or a ``.pub`` file holding it)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from escalade_protocol.artifacts import BundleError
from escalade_protocol.keys import Ed25519PrivateKey, Ed25519PublicKey, public_bytes


def write_release_key(path: Path) -> tuple[Path, str]:
    """Generate a release key: `path` (PEM, 0600) and `path`.pub (hex); returns (pub, hex)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_hex = public_bytes(key.public_key()).hex()
    pub = path.with_name(path.name + ".pub")
    pub.write_text(public_hex + "\n")
    return pub, public_hex


def load_release_private(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise BundleError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise BundleError(f"cannot read release key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise BundleError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 key")
    return key


def parse_release_key(text: str) -> Ed25519PublicKey:
    """A pinned release public key: 64 hex digits, or the path of a file holding them."""
    value = text.strip()
    if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        path = Path(value).expanduser()
        try:
            value = path.read_text().strip()
        except OSError:
            raise BundleError(
                f"release key {text!r} is neither 64 hex digits nor a readable file"
            ) from None
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
    except ValueError:
        raise BundleError(f"release key {text!r} is not an Ed25519 public key") from None


def parse_release_keys(texts: tuple[str, ...] | list[str]) -> tuple[Ed25519PublicKey, ...]:
    return tuple(parse_release_key(t) for t in texts)
