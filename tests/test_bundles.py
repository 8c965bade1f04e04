"""Signed, digest-addressed bundles: the pure checks and the `escalade models` commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from escalade.cli import main
from escalade_protocol import bundles
from escalade_protocol.artifacts import MANIFEST_NAME
from escalade_protocol.bundles import (
    SIGNATURE_NAME,
    BundleRefused,
    bundle_digest,
    inspect_bundle,
    require_trusted,
    sign_bundle,
)
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PrivateKey


@pytest.fixture(name="copy")
def copy_fixture(bundle_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(bundle_dir, out)
    (out / SIGNATURE_NAME).unlink(missing_ok=True)
    return out


def _codes(verdict: bundles.BundleVerdict) -> list[ErrorCode]:
    return [f.code for f in verdict.failures]


def test_public_surface() -> None:
    """The package exports what hub, agent and CLI use, nothing private."""
    assert all(not name.startswith("_") for name in bundles.__all__)
    assert "inspect_bundle" in bundles.__all__


def test_signed_bundle_passes_with_its_key(copy: Path) -> None:
    """A bundle signed by the pinned key passes; the verdict names it and the signer."""
    key = Ed25519PrivateKey.generate()
    sig = sign_bundle(copy, key)
    verdict = inspect_bundle(copy, release_keys=[key.public_key()])
    assert verdict.trusted, verdict.summary()
    assert verdict.digest == sig.bundle_digest
    assert verdict.signer == bundles.release_key_id(key.public_key())


def test_digest_is_canonical(copy: Path) -> None:
    """Re-indenting the manifest keeps the name; changing a value makes another one."""
    before = bundle_digest((copy / MANIFEST_NAME).read_bytes())
    raw = json.loads((copy / MANIFEST_NAME).read_text())
    (copy / MANIFEST_NAME).write_text(json.dumps(raw, indent=7))
    assert bundle_digest((copy / MANIFEST_NAME).read_bytes()) == before
    raw["seed"] = raw["seed"] + 1
    (copy / MANIFEST_NAME).write_text(json.dumps(raw))
    assert bundle_digest((copy / MANIFEST_NAME).read_bytes()) != before


def test_unsigned_refused_when_a_key_is_pinned(copy: Path) -> None:
    """No manifest.sig with a pinned key: bundle_unsigned; with none pinned: passes."""
    key = Ed25519PrivateKey.generate().public_key()
    assert _codes(inspect_bundle(copy, release_keys=[key])) == [ErrorCode.BUNDLE_UNSIGNED]
    assert inspect_bundle(copy, release_keys=[]).trusted


def test_other_key_refused(copy: Path) -> None:
    """Signed by a key that is not pinned: bundle_untrusted_key."""
    sign_bundle(copy, Ed25519PrivateKey.generate())
    pinned = Ed25519PrivateKey.generate().public_key()
    verdict = inspect_bundle(copy, release_keys=[pinned])
    assert _codes(verdict) == [ErrorCode.BUNDLE_UNTRUSTED_KEY]
    with pytest.raises(BundleRefused) as caught:
        require_trusted(verdict)
    assert caught.value.code is ErrorCode.BUNDLE_UNTRUSTED_KEY


def test_manifest_changed_after_signing_refused(copy: Path) -> None:
    """Editing the manifest after signing: the signature names another digest."""
    key = Ed25519PrivateKey.generate()
    sign_bundle(copy, key)
    raw = json.loads((copy / MANIFEST_NAME).read_text())
    raw["router"]["threshold"] = 0.01
    (copy / MANIFEST_NAME).write_text(json.dumps(raw))
    verdict = inspect_bundle(copy, release_keys=[key.public_key()])
    assert _codes(verdict) == [ErrorCode.BUNDLE_DIGEST_MISMATCH]


def test_forged_signature_refused(copy: Path) -> None:
    """A signature with one bit flipped: bundle_signature_invalid."""
    key = Ed25519PrivateKey.generate()
    sig = sign_bundle(copy, key)
    flipped = f"{int(sig.signature[0], 16) ^ 1:x}" + sig.signature[1:]
    forged = sig.model_copy(update={"signature": flipped})
    (copy / SIGNATURE_NAME).write_text(forged.model_dump_json())
    verdict = inspect_bundle(copy, release_keys=[key.public_key()])
    assert _codes(verdict) == [ErrorCode.BUNDLE_SIGNATURE_INVALID]


def test_corrupt_file_refused_and_every_failure_listed(copy: Path) -> None:
    """One byte changed in the head and an unexpected name: both failures are listed."""
    key = Ed25519PrivateKey.generate()
    sign_bundle(copy, key)
    head = copy / "head.onnx"
    data = bytearray(head.read_bytes())
    data[100] ^= 0xFF
    head.write_bytes(bytes(data))
    verdict = inspect_bundle(copy, release_keys=[key.public_key()], expected_digest="0" * 64)
    assert _codes(verdict) == [ErrorCode.BUNDLE_DIGEST_MISMATCH, ErrorCode.BUNDLE_DIGEST_MISMATCH]
    assert "head.onnx" in verdict.failures[1].detail


def test_damaged_bundle_is_not_signed(copy: Path) -> None:
    """sign refuses a bundle whose files do not match its manifest."""
    (copy / "head.onnx").write_bytes(b"not onnx")
    with pytest.raises(BundleRefused):
        sign_bundle(copy, Ed25519PrivateKey.generate())
    assert not (copy / SIGNATURE_NAME).exists()


def test_cli_keygen_sign_verify(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keygen writes a 0600 key; sign then verify --json exits 0; a corrupt file exits 1."""
    key = tmp_path / "release.key"
    assert main(["models", "keygen", "--out", str(key)]) == 0
    assert key.stat().st_mode & 0o777 == 0o600
    assert main(["models", "sign", str(copy), "--key", str(key)]) == 0
    capsys.readouterr()
    pub = str(key) + ".pub"
    assert main(["models", "verify", str(copy), "--release-key", pub, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["failures"] == []
    (copy / "test.npz").write_bytes(b"x" + (copy / "test.npz").read_bytes()[1:])
    assert main(["models", "verify", str(copy), "--release-key", pub, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in report["failures"]] == ["bundle_digest_mismatch"]
