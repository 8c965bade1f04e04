"""`escalade`: build the demo models and run the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel

from attestation import PolicyError
from escalade.bundle_notes import check_bundle, describe, hub_accuracy_warning
from escalade.console import (
    StepCallback,
    console,
    print_demo_report,
    print_poisoning_report,
    print_verdict,
    progress_bar,
)
from escalade.procs import ServiceError
from escalade_protocol.artifacts import MANIFEST_NAME, BundleError

Report = TypeVar("Report", bound=BaseModel)


def write_figures(report: BaseModel, path: str | None) -> None:
    """`--json PATH`: the report's figures, as the bench's pydantic model dumps them."""
    if path:
        Path(path).write_text(report.model_dump_json(indent=2) + "\n")
        console.print(f"figures written to {path}")


def run_bench(
    args: argparse.Namespace,
    run: Callable[[StepCallback], Report],
    show: Callable[[Report], None],
    *,
    timed: bool = True,
) -> tuple[int, Report | None]:
    """One benchmark command: run it behind progress bars, show its tables, write `--json`.
    A dataset that cannot be loaded is one line and exit 2."""
    from escalade.modelbuild import DatasetError

    started = time.perf_counter()
    try:
        with progress_bar() as step:
            report = run(step)
    except DatasetError as exc:
        console.print(f"[red]escalade: error:[/] {exc}")
        return 2, None
    show(report)
    if timed:
        console.print(f"({time.perf_counter() - started:.0f} s)")
    write_figures(report, args.json)
    return 0, report


def default_models_dir(dataset: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "escalade" / "models" / dataset


def build_models(
    dataset: str,
    out: Path,
    seed: int,
    *,
    hub_hidden: tuple[int, ...] | None = None,
    hub_epochs: int | None = None,
    encoder: Literal["pca", "mlp"] = "pca",
    graph: bool = False,
    network: bool = False,
) -> None:
    from escalade.modelbuild import build_bundle

    started = time.perf_counter()
    with progress_bar() as step:
        manifest = build_bundle(
            dataset,
            out,
            seed=seed,
            on_step=step,
            hub_hidden=hub_hidden,
            hub_epochs=hub_epochs,
            encoder_kind=encoder,
            network=network,
        )
    m = manifest.metrics
    console.print(
        f"built {manifest.model_id} v{manifest.model_version} in {out} "
        f"({time.perf_counter() - started:.1f} s): edge {m.edge_accuracy:.2%}, "
        f"hub {m.hub_accuracy:.2%}, cascade {m.cascade_accuracy:.2%} "
        f"at {m.escalation_rate:.1%} escalated (test split)"
    )
    if graph:
        build_demo_graph(out)
    warning = hub_accuracy_warning(m)
    if warning is not None:
        console.print(f"[bold yellow]warning:[/] {warning}")


def build_demo_graph(models: Path) -> None:
    from escalade.modelbuild.graph_heads import build_graph

    spec = build_graph(models)
    console.print(f"built the task graph (gate, group gate, specialists) in {spec}")


def cmd_models_build(args: argparse.Namespace) -> int:
    from escalade.modelbuild import DatasetError

    try:
        build_models(
            args.dataset,
            Path(args.out).expanduser(),
            args.seed,
            hub_hidden=args.hub_hidden,
            hub_epochs=args.hub_epochs,
            encoder=args.encoder,
            graph=args.graph,
            network=args.network,
        )
    except DatasetError as exc:
        console.print(f"[red]escalade: error:[/] {exc}")
        return 2
    if args.sign_key:
        from escalade.bundle_cli import sign_built

        sign_built(Path(args.out).expanduser(), Path(args.sign_key).expanduser())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from escalade.demo import run_demo

    cached = not args.models
    if args.rebuild and not cached:
        console.print(
            "[red]escalade: error:[/] --rebuild rebuilds the cached bundle; for your own "
            f"directory run `escalade models build --out {args.models}`"
        )
        return 2
    models = Path(args.models).expanduser() if args.models else default_models_dir("digits")
    if args.rebuild and (models / MANIFEST_NAME).exists():
        shutil.rmtree(models)
    if not (models / MANIFEST_NAME).exists():
        console.print(f"demo models not found in {models}: building them (digits, seed 0)")
        build_models("digits", models, 0, graph=True)
    try:
        manifest = check_bundle(models)
    except BundleError as exc:
        fix = (
            "run `escalade demo --rebuild` to build it afresh"
            if cached
            else f"rebuild it with `escalade models build --out {models}`"
        )
        console.print(f"[red]escalade: error:[/] the model bundle in {models} is damaged: {exc}")
        console.print(f"  {fix}")
        return 2
    if cached and not (models / "graph" / "graph.toml").exists():
        # A checked cache from before task graphs: add the demo's graph to it.
        build_demo_graph(models)
    console.print(
        describe(models, manifest) + (" (the cache; --rebuild to rebuild)" if cached else "")
    )
    with progress_bar() as step:
        report = asyncio.run(run_demo(models, progress=step, limit=args.limit))
    print_demo_report(report)
    write_figures(report, args.json)
    return 0


def cmd_attest_verify(args: argparse.Namespace) -> int:
    from escalade.attest import VerifyError, verify

    try:
        report = verify(
            quote=Path(args.quote),
            collateral=Path(args.collateral) if args.collateral else None,
            root=Path(args.root) if args.root else None,
            now=args.now,
            policy=Path(args.policy) if args.policy else None,
            expect_report_data=args.expect_report_data,
            vcek=Path(args.vcek) if args.vcek else None,
            chain=Path(args.chain) if args.chain else None,
            crl=Path(args.crl) if args.crl else None,
        )
    except (VerifyError, PolicyError) as exc:
        console.print(f"[red]escalade: error:[/] {exc}")
        return 2
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print_verdict(report)
    # 0 only when every cryptographic check passed; the policy outcome is in `status`.
    return 0 if report.crypto_ok else 1


def cmd_bench_poisoning(args: argparse.Namespace) -> int:
    from escalade.poisoning_bench import run_poisoning_bench

    models = Path(args.models) if args.models else None
    return run_bench(
        args,
        lambda step: run_poisoning_bench(
            args.dataset, seed=args.seed, on_step=step, bundle_dir=models
        ),
        print_poisoning_report,
    )[0]


def cmd_bench_audits(args: argparse.Namespace) -> int:
    import tempfile

    from escalade.audit_bench import markdown, run_audit_bench
    from escalade.modelbuild import build_bundle

    with tempfile.TemporaryDirectory(prefix="escalade-audits-") as tmp:
        bundle = Path(args.models) if args.models else Path(tmp)
        if not args.models:
            console.print("building the digits bundle (seed 0) ...")
            build_bundle("digits", bundle, seed=0)
        report = run_audit_bench(
            bundle, devices=args.devices, messages=args.messages, honest_devices=args.devices
        )
    print(markdown(report))
    write_figures(report, args.json)
    return 0


def cmd_bench_privacy(args: argparse.Namespace) -> int:
    from escalade.privacy_bench import run_privacy_bench
    from escalade.privacy_bench.table import markdown

    return run_bench(
        args,
        lambda step: run_privacy_bench(args.dataset or ["digits"], seed=args.seed, on_step=step),
        lambda report: print(markdown(report)),
        timed=False,
    )[0]


def cmd_bench_cascade(args: argparse.Namespace) -> int:
    from escalade.cascade_bench import markdown, plot_curves, run_cascade_bench

    code, report = run_bench(
        args,
        lambda step: run_cascade_bench(
            args.dataset,
            seeds=tuple(range(args.seeds)),
            on_step=step,
            rtt_ms=args.rtt_ms,
            uplink_mbps=args.uplink_mbps,
            hub_price=args.hub_price,
            quick=args.quick,
            network=args.network,
        ),
        lambda report: print(markdown(report)),
    )
    if report is not None and args.plot:
        console.print(f"plot written to {plot_curves(report, Path(args.plot))}")
    return code


def cmd_bench_lifecycle(args: argparse.Namespace) -> int:
    from escalade.lifecycle_bench import markdown, run_lifecycle_bench

    return run_bench(
        args,
        lambda step: run_lifecycle_bench(
            args.dataset, seed=args.seed, quick=args.quick, on_step=step
        ),
        lambda report: print(markdown(report)),
    )[0]


def cmd_bench_graph(args: argparse.Namespace) -> int:
    from escalade.graph_bench import markdown, run_graph_bench

    models = Path(args.models).expanduser() if args.models else None
    return run_bench(
        args,
        lambda step: run_graph_bench(
            args.dataset, seed=args.seed, quick=args.quick, models=models, progress=step
        ),
        lambda report: print(markdown(report)),
    )[0]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _layer_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(_positive_int(part) for part in text.split(","))
    if any(size > 16384 for size in sizes):
        raise argparse.ArgumentTypeError("layer widths above 16384 are not supported")
    return sizes


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True
    )
    poisoning = bench.add_parser("poisoning", help="attacks on the hub's embedding checks")
    poisoning.add_argument("--dataset", default="digits")
    poisoning.add_argument("--models", default=None, help="bundle to attack (default: build)")
    poisoning.add_argument("--seed", type=int, default=0)
    poisoning.add_argument("--json", default=None, help="also write the figures as JSON here")
    poisoning.set_defaults(func=cmd_bench_poisoning)
    audits = bench.add_parser(
        "audits", help="audits by re-encoding against attackers no statistic sees"
    )
    audits.add_argument("--models", default=None, help="model bundle (default: build digits)")
    audits.add_argument("--devices", type=int, default=200, help="attacker and honest devices")
    audits.add_argument("--messages", type=int, default=1000, help="messages per device")
    audits.add_argument("--json", default=None, help="also write the report here")
    audits.set_defaults(func=cmd_bench_audits)
    privacy = bench.add_parser("privacy", help="what wire embeddings reveal about inputs")
    privacy.add_argument(
        "--dataset", action="append", help="repeatable (default: digits; also fashion-mnist)"
    )
    privacy.add_argument("--seed", type=int, default=0)
    privacy.add_argument("--json", default=None, help="also write the figures as JSON here")
    privacy.set_defaults(func=cmd_bench_privacy)
    cascade = bench.add_parser("cascade", help="routing policies: accuracy, escalation, cost")
    cascade.add_argument("--dataset", default="digits", help="digits, fashion-mnist, npz:P, csv:P")
    cascade.add_argument("--seeds", type=int, default=3)
    cascade.add_argument("--rtt-ms", type=float, default=40.0, help="network model: round trip")
    cascade.add_argument("--uplink-mbps", type=float, default=10.0, help="network model: uplink")
    cascade.add_argument("--hub-price", type=float, default=0.001, help="cost per escalation")
    cascade.add_argument(
        "--network",
        action="store_true",
        help="build the hub's model network per seed and add its fusion and multi-model "
        "policies, against hub-only and one large model (docs/model-network.md)",
    )
    cascade.add_argument(
        "--quick", action="store_true", help="200 bootstrap resamples instead of 1000"
    )
    cascade.add_argument("--json", default=None, help="also write the figures as JSON here")
    cascade.add_argument("--plot", default=None, help="accuracy vs escalation rate PNG")
    cascade.set_defaults(func=cmd_bench_cascade)
    lifecycle = bench.add_parser(
        "lifecycle", help="adapters, the closed loop (clean and poisoned), bad bundles"
    )
    lifecycle.add_argument("--dataset", default="digits", help="digits, fashion-mnist, npz:P")
    lifecycle.add_argument("--seed", type=int, default=0)
    lifecycle.add_argument("--quick", action="store_true", help="a small fleet, quick fits")
    lifecycle.add_argument("--json", default=None, help="also write the figures as JSON here")
    lifecycle.set_defaults(func=cmd_bench_lifecycle)
    graph = bench.add_parser("graph", help="task graph: parallel vs sequence, early exit")
    graph.add_argument("--dataset", default="digits", help="digits, fashion-mnist, npz:P, csv:P")
    graph.add_argument("--models", default=None, help="bundle to use (default: build one)")
    graph.add_argument("--seed", type=int, default=0)
    graph.add_argument("--quick", action="store_true", help="a small build and 120 inputs")
    graph.add_argument("--json", default=None, help="also write the figures as JSON here")
    graph.set_defaults(func=cmd_bench_graph)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="escalade", description="Escalade tools")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="model bundles").add_subparsers(
        dest="models_command", required=True
    )
    build = models.add_parser("build", help="train the demo models and export them to ONNX")
    build.add_argument("--dataset", default="digits", help="dataset (digits)")
    build.add_argument("--out", required=True, help="bundle directory to write")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument(
        "--hub-hidden",
        type=_layer_sizes,
        default=None,
        metavar="N,N,...",
        help="hub hidden layer widths, e.g. 2048,2048 (a costlier hub; default: the recipe's)",
    )
    build.add_argument("--hub-epochs", type=_positive_int, default=None, help="hub training epochs")
    build.add_argument(
        "--encoder",
        choices=("pca", "mlp"),
        default="pca",
        help="pca (linear, default) or mlp (private: narrow nonlinear, see docs/privacy.md)",
    )
    build.add_argument(
        "--graph",
        action="store_true",
        help="also build the demo task graph (gate and specialists, docs/task-graphs.md)",
    )
    build.add_argument(
        "--network",
        action="store_true",
        help="also build the hub's model network: small, wide and specialist hub models, "
        "fusion weights and the meta-router (docs/model-network.md)",
    )
    build.add_argument(
        "--sign-key", default=None, help="release key to sign the bundle with (models keygen)"
    )
    build.set_defaults(func=cmd_models_build)
    from escalade.bundle_cli import add_bundle_commands
    from escalade.lifecycle_cli import add_lifecycle_commands

    add_bundle_commands(models)
    add_lifecycle_commands(models)

    demo = sub.add_parser("demo", help="run a hub and an agent on loopback and report figures")
    demo.add_argument("--models", default=None, help="bundle directory (built if missing)")
    demo.add_argument("--json", default=None, help="also write the figures as JSON here")
    demo.add_argument("--limit", type=int, default=None, help="use only the first N test inputs")
    demo.add_argument(
        "--rebuild", action="store_true", help="delete the cached bundle and build it afresh"
    )
    demo.set_defaults(func=cmd_demo)

    _add_bench(sub)

    attest = sub.add_parser("attest", help="remote attestation tools").add_subparsers(
        dest="attest_command", required=True
    )
    verify = attest.add_parser(
        "verify", help="appraise an Intel DCAP quote or AMD SEV-SNP report, offline"
    )
    verify.add_argument("--quote", required=True, help="quote or SNP report file, raw or hex")
    verify.add_argument("--collateral", default=None, help="DCAP collateral JSON (PCCS fields)")
    verify.add_argument("--vcek", default=None, help="SNP: the VCEK or VLEK certificate")
    verify.add_argument("--chain", default=None, help="SNP: ASK/ASVK + ARK PEM (default: AMD's)")
    verify.add_argument("--crl", default=None, help="SNP: AMD's CRL for the product")
    verify.add_argument(
        "--root", default=None, help="root PEM (default: pinned Intel root / AMD ARKs)"
    )
    verify.add_argument("--now", default=None, help="ISO 8601 time to verify at (default: now)")
    verify.add_argument("--policy", default=None, help="appraisal policy TOML")
    verify.add_argument("--expect-report-data", default=None, help="hex REPORT_DATA to require")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.set_defaults(func=cmd_attest_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (BundleError, ServiceError) as exc:
        console.print(f"[red]escalade: error:[/] {exc}")
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
