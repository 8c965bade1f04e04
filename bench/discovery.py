"""What LAN discovery costs: agent start to first successful escalation, discovery vs static URL.

A real hub announces itself in one network namespace; a real agent starts in the other, once
with `hub = "auto"` and once with the hub's URL, in alternating rounds (ABBA) in one run. The
clock runs from spawning `edge-agent run` to the first `/v1/infer` answered by the hub
(`route = hub`, polled every 5 ms once the agent is ready). Both modes pay the same process
start and model warm-up; the difference is what discovery adds (target: <= 2 s).

Needs root (network namespaces). The measuring half runs inside the agent's namespace (this
script re-run with ``--inside``), so no address ever leaves the namespaces.

    PYTHONPATH=. python bench/discovery.py [--models DIR] [--rounds N] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from netns import cannot_make_namespaces, hub_command, lan

from escalade.procs import (
    migrate_hub,
    module_command,
    run_step,
    service,
)

TARGET_S = 2.0


async def _first_escalation(url: str, features: list[float]) -> None:
    body = json.dumps({"input": features, "route": "hub"})
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.post(
                url + "/v1/infer", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                reply = await response.json()
            if reply.get("path") == "escalated":
                return
            await asyncio.sleep(0.005)


async def inside(args: argparse.Namespace) -> None:
    """In the agent's namespace: start the agent per mode and round, time it."""
    with np.load(Path(args.models) / "test.npz") as data:
        features = [float(x) for x in data["X"][0]]
    base = Path(args.workdir)
    timings: dict[str, list[float]] = {"static": [], "auto": []}
    order = ["static", "auto", "auto", "static"] * args.rounds
    for mode in order:
        config = base / f"agent-{mode}.toml"
        hub = '"auto"' if mode == "auto" else f'"{args.hub_url}"'
        config.write_text(
            f'data_dir = "{base / "agent"}"\nmodels_dir = "{args.models}"\nport = 0\n'
            f"allow_simulated_tee = true\nhub = {hub}\nadvertise = false\n"
            f'discovery_interfaces = ["{args.interface}"]\n'
        )
        argv = module_command("edge_agent.cli", "run", "--config", str(config), "--ready")
        started = time.perf_counter()
        async with service(f"agent-{mode}", argv, log_dir=base) as agent:
            await _first_escalation(agent.url, features)
            timings[mode].append(time.perf_counter() - started)
    print(json.dumps(timings))


async def outside(args: argparse.Namespace) -> dict[str, Any]:
    reason = cannot_make_namespaces()
    if reason is not None:
        raise SystemExit(f"bench/discovery.py: {reason}")
    with tempfile.TemporaryDirectory(prefix="escalade-disc-") as tmp:
        work = Path(tmp)
        models = Path(args.models) if args.models else work / "bundle"
        if not args.models:
            from escalade.modelbuild import build_bundle

            build_bundle("digits", models, seed=0)
        await migrate_hub(work / "hub")
        with lan("b") as net:
            hub_argv = hub_command(net, work / "hub", models)
            async with service("hub", hub_argv, log_dir=work) as hub:
                token = await run_step(
                    module_command(
                        "cloud_hub.cli",
                        "tokens",
                        "create",
                        "--data-dir",
                        str(work / "hub"),
                        "--quiet",
                    ),
                    what="creating an enrollment token",
                )
                enroll = module_command(
                    "edge_agent.cli",
                    "enroll",
                    "--hub",
                    hub.url,
                    f"--token={token.strip()}",
                    "--data-dir",
                    str(work / "agent"),
                )
                await run_step(net.agent.command(enroll), what="enrolling the agent")
                out = await run_step(
                    net.agent.command(
                        [
                            sys.executable,
                            __file__,
                            "--inside",
                            "--models",
                            str(models),
                            "--workdir",
                            str(work),
                            "--hub-url",
                            hub.url,
                            "--interface",
                            net.agent.interface,
                            "--rounds",
                            str(args.rounds),
                        ]
                    ),
                    what="measuring in the agent's namespace",
                )
    timings: dict[str, list[float]] = json.loads(out.strip().splitlines()[-1])
    static, auto = statistics.median(timings["static"]), statistics.median(timings["auto"])
    return {
        "rounds": args.rounds,
        "static_s": timings["static"],
        "auto_s": timings["auto"],
        "static_median_s": static,
        "auto_median_s": auto,
        "added_by_discovery_s": auto - static,
        "target_added_s": TARGET_S,
        "met": auto - static <= TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="bundle (default: build digits)")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (4 starts each)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hub-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--interface", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        asyncio.run(inside(args))
        return
    result = asyncio.run(outside(args))
    print(
        f"agent start -> first escalation, median of {2 * args.rounds} starts each: "
        f"static URL {result['static_median_s']:.2f} s, discovery {result['auto_median_s']:.2f} s"
        f"; discovery adds {result['added_by_discovery_s']:+.2f} s "
        f"(target <= {TARGET_S:.0f} s: {'met' if result['met'] else 'NOT met'})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
