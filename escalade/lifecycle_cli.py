"""`escalade models adapt | import`: adapters across encoder versions, bring-your-own models.

    escalade models adapt --from V1 --to V2 --out DIR [--kind auto|linear|mlp] [--pairs P.npz]
    escalade models import --encoder E.onnx --head H.onnx --hub M.onnx --calibration D.npz
                           --out DIR [--sign-key K]

Expected errors are one line with a stable code and exit 2 (`--json`: the error as JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from escalade.console import console


def _fail(code: str, message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "code": code, "error": message}))
    else:
        # Plain print: the console would wrap a long message over several lines.
        print(f"escalade: error: {code}: {message}", file=sys.stderr)
    return 2


def _sign(out: Path, key: str | None) -> str | None:
    if not key:
        return None
    from escalade.bundle_cli import sign_built

    sign_built(out, Path(key).expanduser())
    from escalade_protocol.bundles import read_signature

    sig = read_signature(out)
    return sig.bundle_digest if sig else None


def cmd_adapt(args: argparse.Namespace) -> int:
    from escalade.modelbuild.adapter import adapt_bundle
    from escalade.modelbuild.layers import BuildError
    from escalade_protocol.artifacts import BundleError

    pairs = None
    try:
        if args.pairs:
            with np.load(Path(args.pairs).expanduser()) as data:
                labels = data["y"].astype(np.int64) if "y" in data.files else None
                pairs = (data["X"].astype(np.float32), labels)
        out = Path(args.out).expanduser()
        manifest, fitted = adapt_bundle(
            Path(args.source).expanduser(),
            Path(args.target).expanduser(),
            out,
            kind=args.kind,
            pairs=pairs,
            seed=args.seed,
        )
    except (BuildError, BundleError, OSError, KeyError, ValueError) as exc:
        return _fail("adapt_failed", str(exc).splitlines()[0], args.json)
    digest = _sign(out, args.sign_key)
    entry = manifest.adapters[-1]
    report = {
        "ok": True,
        "out": str(out),
        "model": f"{manifest.model_id} v{manifest.model_version}",
        "adapted": f"{entry.source_model_id} v{entry.source_model_version}",
        "kind": fitted.kind,
        "adapted_hub_accuracy": fitted.adapted_accuracy,
        "retrained_hub_accuracy": fitted.retrained_accuracy,
        "signed_digest": digest,
    }
    if args.json:
        print(json.dumps(report))
    else:
        console.print(
            f"{report['model']} now serves {report['adapted']} through a {fitted.kind} adapter: "
            f"hub accuracy {fitted.adapted_accuracy:.2%} (retrained hub "
            f"{fitted.retrained_accuracy:.2%}); bundle in {out}"
            + ("" if digest else " (unsigned: `escalade models sign` it)")
        )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from escalade.modelbuild.import_onnx import ImportRefused, import_bundle

    out = Path(args.out).expanduser()
    try:
        manifest = import_bundle(
            Path(args.encoder).expanduser(),
            Path(args.head).expanduser(),
            Path(args.hub).expanduser(),
            Path(args.calibration).expanduser(),
            out,
            model_id=args.model_id,
            model_version=args.model_version,
            seed=args.seed,
        )
    except ImportRefused as exc:
        return _fail(exc.code.value, exc.message.splitlines()[0], args.json)
    digest = _sign(out, args.sign_key)
    m = manifest.metrics
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "out": str(out),
                    "model_id": manifest.model_id,
                    "model_version": manifest.model_version,
                    "metrics": m.model_dump(),
                    "threshold": manifest.router.threshold,
                    "signed_digest": digest,
                }
            )
        )
    else:
        console.print(
            f"imported {manifest.model_id} v{manifest.model_version} into {out}: edge "
            f"{m.edge_accuracy:.2%}, hub {m.hub_accuracy:.2%}, cascade {m.cascade_accuracy:.2%} "
            f"at {m.escalation_rate:.1%} escalated"
            + ("" if digest else " (unsigned: `escalade models sign` it)")
        )
    return 0


def add_lifecycle_commands(models: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    adapt = models.add_parser(
        "adapt", help="serve a new encoder's version on an old hub model (adapter v2 -> v1)"
    )
    adapt.add_argument("--from", dest="source", required=True, help="the hub's bundle (v1)")
    adapt.add_argument("--to", dest="target", required=True, help="the new encoder's bundle (v2)")
    adapt.add_argument("--out", required=True, help="directory for v1's bundle with the adapter")
    adapt.add_argument("--kind", choices=("auto", "linear", "mlp"), default="auto")
    adapt.add_argument(
        "--pairs", default=None, help="public inputs both encoders read (npz: X, optional y)"
    )
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--sign-key", default=None, help="release key to sign the new bundle")
    adapt.add_argument("--json", action="store_true", help="print the result as JSON")
    adapt.set_defaults(func=cmd_adapt)
    imp = models.add_parser("import", help="build a bundle from ONNX files exported elsewhere")
    imp.add_argument("--encoder", required=True, help="input (N, D) -> embedding (N, E)")
    imp.add_argument("--head", required=True, help="embedding -> probabilities (N, K)")
    imp.add_argument("--hub", required=True, help="embedding -> probabilities (N, K)")
    imp.add_argument("--calibration", required=True, help="npz with X (N, D) and labels y")
    imp.add_argument("--out", required=True, help="bundle directory to write")
    imp.add_argument("--model-id", default=None, help="default: from the calibration file")
    imp.add_argument("--model-version", type=int, default=1)
    imp.add_argument("--seed", type=int, default=0)
    imp.add_argument("--sign-key", default=None, help="release key to sign the bundle with")
    imp.add_argument("--json", action="store_true", help="print the result as JSON")
    imp.set_defaults(func=cmd_import)
