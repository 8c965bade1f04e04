"""The agent's local answer path against bare baselines measured in the same run.

Escalade: a real agent process (`edge_agent.cli run`), answering ``POST /v1/infer`` with
``route = "local"``: strict parsing, the domain check, the models (through the micro-batcher),
the router, the outcome record committed to the SQLite outbox, the typed answer.
Baseline: a bare aiohttp server in its own process that parses the same JSON and answers a
small JSON (no model), plus the bare ``session.run`` of the same encoder and head measured in
this process. The target is agent p50 <= 1.1 x (bare round trip + bare session.run).

Also: throughput with 16 concurrent clients with micro-batching (max batch 16) and without
(max batch 1), and the outbox's write cost per answer (one commit per record, and records of 16
concurrent answers sharing a commit). No hub is needed: the agent answers locally and marks
itself degraded, which is what a local answer costs anyway.

    PYTHONPATH=. python bench/local_path.py [--models DIR] [--requests N] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import onnxruntime as ort

from edge_agent.outbox import Outbox
from escalade.procs import module_command, service
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    PROBABILITIES,
    load_manifest,
    verified_path,
)
from escalade_protocol.device_reports import OutcomePath, OutcomeRecord

BASELINE = """
import json, signal, asyncio
from aiohttp import web
async def infer(request):
    body = json.loads(await request.read())
    return web.json_response({"label": 0, "n": len(body["input"])})
async def main():
    app = web.Application(); app.router.add_post("/v1/infer", infer)
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    print("READY http://127.0.0.1:%d" % runner.addresses[0][1], flush=True)
    stop = asyncio.Event(); asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait(); await runner.cleanup()
asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def latencies(http: aiohttp.ClientSession, url: str, rows: list[str], n: int) -> list[float]:
    out = []
    headers = {"Content-Type": "application/json"}
    for i in range(n):
        start = time.perf_counter()
        async with http.post(url + "/v1/infer", data=rows[i % len(rows)], headers=headers) as r:
            await r.read()
            assert r.status == 200, r.status
        out.append((time.perf_counter() - start) * 1e6)
    return out


async def throughput(http: aiohttp.ClientSession, url: str, rows: list[str], n: int) -> float:
    headers = {"Content-Type": "application/json"}
    counter = iter(range(n))

    async def client() -> None:
        for i in counter:
            async with http.post(url + "/v1/infer", data=rows[i % len(rows)], headers=headers) as r:
                await r.read()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(16)))
    return n / (time.perf_counter() - start)


def bare_session_us(bundle: Path, X: np.ndarray, n: int) -> list[float]:
    manifest = load_manifest(bundle)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    enc = ort.InferenceSession(str(verified_path(bundle, manifest.encoder)), options)
    head = ort.InferenceSession(str(verified_path(bundle, manifest.head)), options)
    out = []
    for i in range(n):
        start = time.perf_counter()
        (e,) = enc.run([EMBEDDING], {ENCODER_INPUT: X[i % len(X)].reshape(1, -1)})
        head.run([PROBABILITIES], {EMBEDDING: e})
        out.append((time.perf_counter() - start) * 1e6)
    return out


def outbox_costs(work: Path, n: int) -> dict[str, float]:
    outbox = Outbox(work / "bench-outbox.sqlite3", max_records=10 * n)

    def rec() -> OutcomeRecord:
        return OutcomeRecord(
            uuid.uuid4(), 0, "m", 1, OutcomePath.LOCAL, "forced_local", 1, None, 0.9, 100
        )

    start = time.perf_counter()
    for _ in range(n):
        outbox.add_many([rec()])
    single = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _ in range(n // 16):
        outbox.add_many([rec() for _ in range(16)])
    grouped = (time.perf_counter() - start) / (n // 16 * 16) * 1e6
    outbox.close()
    return {"commit_per_record_us": single, "grouped_16_us_per_record": grouped}


async def run(models: Path, n: int, work: Path) -> dict[str, Any]:
    manifest = load_manifest(models)
    with np.load(verified_path(models, manifest.test_split)) as data:
        X = np.asarray(data["X"], dtype=np.float32)
    rows = [json.dumps({"input": [float(v) for v in x], "route": "local"}) for x in X[:256]]
    data_dir = work / "agent"
    data_dir.mkdir(mode=0o700)
    # An identity for a hub that is not there: local answers only, as this benchmark wants.
    (data_dir / "device.json").write_text(
        json.dumps({"device_id": str(uuid.uuid4()), "hub_url": "http://127.0.0.1:9"})
    )
    report: dict[str, Any] = {"requests": n}
    async with aiohttp.ClientSession() as http:
        async with service("baseline", [sys.executable, "-c", BASELINE], log_dir=work) as baseline:
            await latencies(http, baseline.url, rows, 200)
            bare_http = await latencies(http, baseline.url, rows, n)
        bare_run = bare_session_us(models, X, n)
        for batch in (16, 1):
            config = work / f"agent-{batch}.toml"
            config.write_text(
                f'data_dir = "{data_dir}"\nmodels_dir = "{models}"\nport = 0\n'
                f"max_batch_size = {batch}\n"
            )
            argv = module_command("edge_agent.cli", "run", "--config", str(config), "--ready")
            async with service(f"agent-{batch}", argv, log_dir=work) as agent:
                await latencies(http, agent.url, rows, 200)
                if batch == 16:
                    agent_lat = await latencies(http, agent.url, rows, n)
                report[f"throughput_16_clients_batch_{batch}"] = await throughput(
                    http, agent.url, rows, 3 * n
                )
    base = statistics.median(bare_http) + statistics.median(bare_run)
    base99 = percentile(bare_http, 99) + percentile(bare_run, 99)
    report.update(
        {
            "agent_p50_us": statistics.median(agent_lat),
            "agent_p99_us": percentile(agent_lat, 99),
            "bare_http_p50_us": statistics.median(bare_http),
            "bare_session_run_p50_us": statistics.median(bare_run),
            "p50_ratio": statistics.median(agent_lat) / base,
            "p99_ratio": percentile(agent_lat, 99) / base99,
        }
    )
    report["batching_gain"] = (
        report["throughput_16_clients_batch_16"] / report["throughput_16_clients_batch_1"]
    )
    report.update(outbox_costs(work, n))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="bundle (default: build digits)")
    parser.add_argument("--requests", type=int, default=2000, help="latency requests per system")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = args.models
        if models is None:
            from escalade.modelbuild import build_bundle

            models = work / "bundle"
            build_bundle("digits", models, seed=0)
        with contextlib.suppress(KeyboardInterrupt):
            report = asyncio.run(run(models, args.requests, work))
    for key, value in report.items():
        print(f"{key:34} {value:12.2f}" if isinstance(value, float) else f"{key:34} {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
