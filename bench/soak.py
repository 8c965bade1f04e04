"""A soak of the hub's escalation path: N concurrent clients for a fixed time, on loopback.

A real hub process and one enrolled device, attested as the agent does it; `--clients`
workers each seal a fresh envelope, POST it and verify the signed answer, until `--seconds`
have passed (bounded in time, loopback only). Reports errors by kind, latency percentiles, and
the hub's resident memory after the warm-up and at the end (growth is what a leak shows).

    PYTHONPATH=. python bench/soak.py [--models DIR] [--clients 64] [--seconds 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from escalation import (
    F32,
    System,
    bundle_embeddings,
    post,
    prepare_bundle,
    progress,
    start_hub,
)

from escalade_protocol import eventloop
from escalade_protocol.artifacts import BundleError, load_manifest

RSS_GROWTH_TARGET = 0.10  # at most, end vs after warm-up


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def soak(
    http: aiohttp.ClientSession,
    system: System,
    embeddings: Sequence[F32],
    *,
    clients: int,
    seconds: float,
) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def client(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            body = system.prepare(embeddings[i % len(embeddings)])
            i += clients
            sent = time.perf_counter()
            try:
                reply = await post(http, system, body)
                system.check(body, reply)
            except (aiohttp.ClientError, RuntimeError, ValueError) as exc:
                errors[type(exc).__name__ + ": " + str(exc)[:120]] += 1
                continue
            latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies, errors


async def run(args: argparse.Namespace, bundle: Path, work: Path) -> dict[str, Any]:
    manifest = load_manifest(bundle)
    embeddings = bundle_embeddings(bundle, manifest)
    connector = aiohttp.TCPConnector(limit=args.clients)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        hub, system, _ = await start_hub(
            stack, http, "soak-hub", bundle=bundle, manifest=manifest, work=work,
            event_loop=eventloop.resolve(args.event_loop),
        )  # fmt: skip
        progress(f"warming up for {args.warmup:.0f} s at {args.clients} clients ...")
        await soak(http, system, embeddings, clients=args.clients, seconds=args.warmup)
        rss_start = rss_bytes(hub.process.pid)
        progress(f"soaking for {args.seconds:.0f} s at {args.clients} clients ...")
        started = time.monotonic()
        latencies, errors = await soak(
            http, system, embeddings, clients=args.clients, seconds=args.seconds
        )
        wall = time.monotonic() - started
        rss_end = rss_bytes(hub.process.pid)
    lat = np.array(latencies) * 1000
    return {
        "clients": args.clients,
        "seconds": wall,
        "escalations": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "throughput_rps": len(latencies) / wall,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        },
        "hub_rss_mib": {"after_warmup": rss_start / 2**20, "end": rss_end / 2**20},
        "hub_rss_growth": rss_end / rss_start - 1,
        "targets": {"errors": 0, "rss_growth_max": RSS_GROWTH_TARGET},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="model bundle (default: build digits)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 1024 and 0 < args.seconds <= 3600):
        parser.error("clients must be 1-1024 and seconds 0-3600")
    with tempfile.TemporaryDirectory(prefix="escalade-soak-") as tmp:
        work = Path(tmp)
        try:
            result = asyncio.run(run(args, prepare_bundle(args.models, work), work))
        except (BundleError, aiohttp.ClientError, RuntimeError, ValueError) as exc:
            progress(f"soak failed, hub stopped: {exc!r}")
            return 1
    growth = result["hub_rss_growth"]
    print(
        f"soak: {result['escalations']} escalations in {result['seconds']:.0f} s at "
        f"{result['clients']} clients ({result['throughput_rps']:.0f}/s), "
        f"{result['errors']} errors; p50 {result['latency_ms']['p50']:.1f} ms, "
        f"p99 {result['latency_ms']['p99']:.1f} ms; hub RSS "
        f"{result['hub_rss_mib']['after_warmup']:.1f} -> {result['hub_rss_mib']['end']:.1f} MiB "
        f"({growth:+.1%}, target <= {RSS_GROWTH_TARGET:.0%})"
    )
    for kind, count in result["error_kinds"].items():
        print(f"  {count} x {kind}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["errors"] == 0 and growth <= RSS_GROWTH_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
