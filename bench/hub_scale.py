"""Scale-out: escalations per second against 1 and 2 hub replicas sharing one PostgreSQL.

Real hub processes (`cloud-hub serve --database-url ...`, each its own identity and attested
key), devices enrolled through the first, every replica attested as the agent does it. The load
comes from `--generators` other processes, each with `--concurrency` requests in flight,
spread over the replicas by least outstanding requests (as the agent balances). Envelopes are
sealed before and answers verified after the timed window, so generators stay light; the count
is bounded (`--requests`) and so is the time (`--max-seconds`). Loopback only.

Rounds alternate (1, 2, 2, 1, ...) so the machine's drift falls on both alike. Reported: the
throughput of each setting, their ratio, p50/p99 of the round trip, and each replica's CPU per
escalation, so a scaling claim can be judged against what the machine has: with fewer cores
than replicas + PostgreSQL + load, the ratio is bounded by the cores, not the design.

    PYTHONPATH=. python bench/hub_scale.py --database-url postgresql+psycopg://... [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from escalation import (
    F32,
    System,
    bundle_embeddings,
    escalade_system,
    prepare_bundle,
    process_cpu_s,
    progress,
)
from sqlalchemy import create_engine, text

from attestation import AppraisalPolicy
from edge_agent.enrollment import enroll
from edge_agent.hub_client import ENVELOPE_CONTENT_TYPE, HubClient
from edge_agent.identity import DeviceIdentity
from escalade.procs import Service, module_command, run_step, service
from escalade_protocol.artifacts import BundleError, ModelManifest, load_manifest

SCALE_TARGET = 1.8  # two replicas / one, at least


def _reset(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


# -- the load generator, in other processes ------------------------------------------------------

# (request index, replica index, sealed body) in; (request index, HTTP status, reply, seconds) out.
Work = tuple[int, int, bytes]
Result = tuple[int, int, bytes, float]


def generate(work: list[Work], urls: list[str], concurrency: int, limit_s: float) -> list[Result]:
    """POST every body to its replica with `concurrency` in flight, taking the replica with the
    fewest outstanding requests among those with work left (the agent's balancing)."""
    return asyncio.run(_generate(work, urls, concurrency, limit_s))


async def _generate(
    work: list[Work], urls: list[str], concurrency: int, limit_s: float
) -> list[Result]:
    queues: list[list[tuple[int, bytes]]] = [[] for _ in urls]
    for index, replica, body in reversed(work):
        queues[replica].append((index, body))
    outstanding = [0] * len(urls)
    results: list[Result] = []
    deadline = time.monotonic() + limit_s
    headers = {"Content-Type": ENVELOPE_CONTENT_TYPE}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def worker() -> None:
            while time.monotonic() < deadline:
                ready = [i for i, queue in enumerate(queues) if queue]
                if not ready:
                    return
                replica = min(ready, key=lambda i: outstanding[i])
                index, body = queues[replica].pop()
                outstanding[replica] += 1
                sent = time.perf_counter()
                try:
                    async with http.post(urls[replica], data=body, headers=headers) as response:
                        reply, status = await response.read(), response.status
                finally:
                    outstanding[replica] -= 1
                results.append((index, status, reply, time.perf_counter() - sent))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


# -- what the machine spent ----------------------------------------------------------------------


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL server process on this machine (0 if none is local)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if (proc / "comm").read_text().strip() in ("postgres", "postmaster"):
                total += process_cpu_s(int(proc.name))
    return total


# -- one measured round -------------------------------------------------------------------------


async def measure(
    pool: ProcessPoolExecutor,
    systems: Sequence[System],
    embeddings: Sequence[F32],
    args: argparse.Namespace,
) -> dict[str, Any]:
    count = len(systems)
    work: list[Work] = [
        (i, i % count, systems[i % count].prepare(embeddings[i % len(embeddings)]))
        for i in range(args.requests)
    ]
    parts = [work[g :: args.generators] for g in range(args.generators)]
    urls = [system.url for system in systems]
    loop = asyncio.get_running_loop()
    cpu_before = [process_cpu_s(system.pid) for system in systems]
    pg_before, (busy_before, total_before) = postgres_cpu_s(), machine_busy_s()
    start = time.perf_counter()
    done = await asyncio.gather(
        *(
            loop.run_in_executor(pool, generate, part, urls, args.concurrency, args.max_seconds)
            for part in parts
        )
    )
    wall = time.perf_counter() - start
    cpu = [process_cpu_s(s.pid) - before for s, before in zip(systems, cpu_before, strict=True)]
    pg_cpu = postgres_cpu_s() - pg_before
    busy, total = machine_busy_s()
    answered = [0] * count
    latencies: list[float] = []
    errors = 0
    for index, status, reply, seconds in (result for part in done for result in part):
        _, replica, body = work[index]
        if status != 200:
            errors += 1
            continue
        systems[replica].check(body, reply)  # every answer verified, after the window
        answered[replica] += 1
        latencies.append(seconds)
    ok = sum(answered)
    return {
        "replicas": count,
        "ok": ok,
        "errors": errors,
        "unsent": args.requests - ok - errors,
        "wall_s": round(wall, 3),
        "per_s": round(ok / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 2),
        "per_replica": answered,
        "cpu_us_per_escalation": [
            round(c / max(k, 1) * 1e6) for c, k in zip(cpu, answered, strict=True)
        ],
        "postgres_cpu_us_per_escalation": round(pg_cpu / max(ok, 1) * 1e6),
        # Of all the machine's CPU time in the window, the share spent: ~1.0 is saturated.
        "machine_busy": round((busy - busy_before) / max(total - total_before, 1e-9), 3),
    }


# -- the replicas -------------------------------------------------------------------------------


async def start_replica(
    stack: contextlib.AsyncExitStack,
    name: str,
    database: Sequence[str],
    bundle: Path,
    work: Path,
) -> Service:
    argv = module_command(
        "cloud_hub.cli", "serve", "--data-dir", str(work / name), *database, "--models",
        str(bundle), "--port", "0", "--allow-simulated-tee", "--ready",
    )  # fmt: skip
    return await stack.enter_async_context(service(name, argv, log_dir=work))


async def enrolled_device(hub: Service, database: Sequence[str], path: Path) -> DeviceIdentity:
    token = await run_step(
        module_command("cloud_hub.cli", "tokens", "create", *database, "--quiet"),
        what="creating an enrollment token",
    )
    return await enroll(hub_url=hub.url, token=token.strip(), data_dir=path, profile="bench")


async def attach(
    http: aiohttp.ClientSession,
    hub: Service,
    identity: DeviceIdentity,
    manifest: ModelManifest,
) -> System:
    attested = await HubClient(
        http,
        base_url=hub.url,
        identity=identity,
        manifest=manifest,
        policy=AppraisalPolicy(allow_simulated_tee=True),
    ).attest()
    return escalade_system(
        hub,
        identity=identity,
        manifest=manifest,
        hub_key_id=attested.key_id,
        encryption_key=attested.encryption_key,
        signing_key=attested.signing_key,
    )


async def run(args: argparse.Namespace, bundle: Path, work: Path) -> dict[str, Any]:
    manifest = load_manifest(bundle)
    embeddings = bundle_embeddings(bundle, manifest)
    _reset(args.database_url)
    await run_step(
        module_command("cloud_hub.cli", "migrate", "--database-url", args.database_url),
        what="migrating the database",
    )
    sqlite_dir = work / "sqlite-hub"
    await run_step(
        module_command("cloud_hub.cli", "migrate", "--data-dir", str(sqlite_dir)),
        what="creating the SQLite database",
    )
    rounds: list[dict[str, Any]] = []
    postgres, sqlite = ("--database-url", args.database_url), ("--data-dir", str(sqlite_dir))
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        hubs = [await start_replica(stack, f"replica-{i}", postgres, bundle, work) for i in (1, 2)]
        identity = await enrolled_device(hubs[0], postgres, work / "device")
        systems = [await attach(http, hub, identity, manifest) for hub in hubs]
        # The same hub on SQLite: what the PostgreSQL path costs, measured beside it.
        local = await start_replica(stack, "sqlite", sqlite, bundle, work)
        local_device = await enrolled_device(local, sqlite, work / "sqlite-device")
        local_system = await attach(http, local, local_device, manifest)
        pool = stack.enter_context(ProcessPoolExecutor(max_workers=args.generators))
        progress(f"warm-up: {args.warmup} requests over both replicas ...")
        await measure(pool, systems, embeddings, _with(args, requests=args.warmup))
        for number in range(args.rounds):
            order = (1, 2) if number % 2 == 0 else (2, 1)
            for replicas in order:
                result = await measure(pool, systems[:replicas], embeddings, args)
                result["database"] = "postgresql"
                progress(
                    f"round {number + 1}: {replicas} replica(s): {result['per_s']:.0f}/s, "
                    f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
                    f"CPU/escalation {result['cpu_us_per_escalation']} us, PostgreSQL "
                    f"{result['postgres_cpu_us_per_escalation']} us, machine busy "
                    f"{result['machine_busy']:.0%}"
                )
                rounds.append(result)
            result = await measure(pool, [local_system], embeddings, args)
            result["database"] = "sqlite"
            progress(f"round {number + 1}: 1 replica on SQLite: {result['per_s']:.0f}/s")
            rounds.append(result)
    return summarise(rounds, args)


def _with(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    copy = argparse.Namespace(**vars(args))
    for key, value in changes.items():
        setattr(copy, key, value)
    return copy


def summarise(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    def median(replicas: int, database: str = "postgresql") -> float:
        return float(
            np.median(
                [
                    r["per_s"]
                    for r in rounds
                    if r["replicas"] == replicas and r["database"] == database
                ]
            )
        )

    one, two, local = median(1), median(2), median(1, "sqlite")
    return {
        "machine": {"cpus": len(os.sched_getaffinity(0))},
        "settings": {
            "requests": args.requests,
            "generators": args.generators,
            "concurrency_per_generator": args.concurrency,
            "rounds": args.rounds,
        },
        "one_replica_per_s": one,
        "two_replicas_per_s": two,
        "scaling": round(two / one, 3),
        "sqlite_one_replica_per_s": local,
        # The PostgreSQL path against the same hub on SQLite, same run.
        "postgresql_vs_sqlite": round(one / local, 3),
        "target": SCALE_TARGET,
        "met": two / one >= SCALE_TARGET,
        "errors": sum(r["errors"] for r in rounds),
        "rounds": rounds,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'database':>10} {'replicas':>8} {'esc/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'busy':>6}"
        f" {'PG us':>6}  hub CPU us/escalation per replica"
    )
    for r in result["rounds"]:
        print(
            f"{r['database']:>10} {r['replicas']:>8} {r['per_s']:>8.0f} {r['p50_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f} {r['machine_busy']:>6.0%} "
            f"{r['postgres_cpu_us_per_escalation']:>6}  {r['cpu_us_per_escalation']}"
        )
    print(f"one replica, PostgreSQL / SQLite: {result['postgresql_vs_sqlite']:.2f}x")
    verdict = "met" if result["met"] else "MISSED"
    print(
        f"two replicas / one: {result['scaling']:.2f}x (target >= {SCALE_TARGET}x: {verdict}) "
        f"on {result['machine']['cpus']} CPU(s); errors: {result['errors']}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--database-url",
        default=os.environ.get("ESCALADE_TEST_POSTGRES_URL"),
        help="PostgreSQL URL; ALL ITS TABLES ARE DROPPED (default $ESCALADE_TEST_POSTGRES_URL)",
    )
    p.add_argument("--models", default=None, help="model bundle (default: build digits)")
    p.add_argument("--requests", type=int, default=4000, help="requests per round")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--rounds", type=int, default=2, help="rounds of (1 replica, 2 replicas)")
    p.add_argument("--generators", type=int, default=2, help="load generator processes")
    p.add_argument("--concurrency", type=int, default=16, help="in flight per generator")
    p.add_argument("--max-seconds", type=float, default=60.0, help="time bound per round")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    if not args.database_url or not args.database_url.startswith("postgresql"):
        p.error("needs a PostgreSQL --database-url (replicas share one database server)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="escalade-scale-") as tmp:
        try:
            bundle = prepare_bundle(args.models, Path(tmp))
            result = asyncio.run(run(args, bundle, Path(tmp)))
        except BundleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print_table(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
