"""`escalade models keygen | sign | verify`: release keys and signed bundles.

    escalade models keygen --out release.key      # release.key (0600) and release.key.pub
    escalade models sign BUNDLE --key release.key # writes BUNDLE/manifest.sig
    escalade models verify BUNDLE --release-key release.key.pub [--json]

`verify` exits 1 when a check fails, listing every failed check with its stable code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from escalade.console import console
from escalade_protocol.bundles import (
    inspect_bundle,
    load_release_private,
    parse_release_keys,
    sign_bundle,
    write_release_key,
)


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    if out.exists():
        console.print(f"[red]escalade: error:[/] {out} exists; not overwriting a key")
        return 2
    pub, public_hex = write_release_key(out)
    if args.json:
        print(
            json.dumps(
                {"private_key": str(out), "public_key_file": str(pub), "public_key": public_hex}
            )
        )
    else:
        console.print(f"release key {out} (mode 0600); public key {pub}:\n{public_hex}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle).expanduser()
    sig = sign_bundle(bundle, load_release_private(Path(args.key).expanduser()))
    if args.json:
        print(sig.model_dump_json())
    else:
        console.print(f"signed bundle {sig.bundle_digest} with release key {sig.key_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle).expanduser()
    keys = parse_release_keys(args.release_key)
    verdict = inspect_bundle(bundle, release_keys=keys, expected_digest=args.digest)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": verdict.trusted,
                    "digest": verdict.digest,
                    "model_id": verdict.manifest.model_id if verdict.manifest else None,
                    "model_version": verdict.manifest.model_version if verdict.manifest else None,
                    "signer": verdict.signer,
                    "failures": [
                        {"code": f.code.value, "detail": f.detail} for f in verdict.failures
                    ],
                }
            )
        )
    elif verdict.trusted:
        console.print(f"bundle {verdict.digest}: signed by {verdict.signer}, all files match")
    else:
        console.print(f"[red]bundle refused:[/] {verdict.summary()}")
    return 0 if verdict.trusted else 1


def add_bundle_commands(models: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = models.add_parser("keygen", help="generate a release key (Ed25519) for bundles")
    keygen.add_argument("--out", required=True, help="private key file to write (mode 0600)")
    keygen.add_argument("--json", action="store_true", help="print the key files as JSON")
    keygen.set_defaults(func=cmd_keygen)
    sign = models.add_parser("sign", help="sign a bundle's manifest (writes manifest.sig)")
    sign.add_argument("bundle", help="bundle directory")
    sign.add_argument("--key", required=True, help="release private key (from keygen)")
    sign.add_argument("--json", action="store_true", help="print the signature as JSON")
    sign.set_defaults(func=cmd_sign)
    verify = models.add_parser("verify", help="check a bundle's files and signature")
    verify.add_argument("bundle", help="bundle directory")
    verify.add_argument(
        "--release-key",
        action="append",
        required=True,
        help="pinned release public key: 64 hex digits or a .pub file (repeatable)",
    )
    verify.add_argument("--digest", default=None, help="the bundle digest it must have")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.set_defaults(func=cmd_verify)


def sign_built(bundle: Path, key: Path) -> None:
    """`models build --sign-key K`: sign the new bundle, generating K first if it is absent."""
    if not key.exists():
        pub, _ = write_release_key(key)
        console.print(f"generated release key {key} (public key in {pub})")
    sig = sign_bundle(bundle, load_release_private(key))
    console.print(f"signed bundle {sig.bundle_digest} with release key {sig.key_id}")
