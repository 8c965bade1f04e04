"""`edge-agent`: enroll this device, run the local API, list firmware profiles."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path

import onnxruntime as ort

from edge_agent.api import AgentState, make_app
from edge_agent.config import AgentConfig
from edge_agent.enrollment import enroll
from edge_agent.errors import AgentError
from edge_agent.identity import DeviceIdentity
from edge_agent.profile import FirmwareProfile, available_profiles, detect, load_profile
from edge_agent.router import RouterConfig, RouterState
from edge_agent.runtime import EdgeRuntime
from escalade_protocol.artifacts import BundleError
from escalade_protocol.entrypoint import run_command
from escalade_protocol.http import serve_until_terminated

log = logging.getLogger("edge_agent")


def _profile(name: str | None) -> FirmwareProfile:
    return load_profile(name) if name else detect(ort.get_available_providers())


def cmd_enroll(args: argparse.Namespace) -> int:
    profile = _profile(args.profile)
    identity = asyncio.run(
        enroll(
            hub_url=args.hub,
            token=args.token,
            data_dir=Path(args.data_dir).expanduser(),
            profile=profile.name,
        )
    )
    print(f"enrolled as device {identity.device_id} with hub {args.hub}")
    return 0


def router_config(config: AgentConfig, runtime: EdgeRuntime) -> RouterConfig:
    """The router's prior from the bundle's calibration, the operator's budgets from config."""
    calibration = runtime.manifest.router
    signal = calibration.signal
    if signal == "learned" and not runtime.has_learned_router:
        raise AgentError("the bundle calibrates a learned router but ships no router model")
    return RouterConfig(
        signal=signal,
        threshold=config.threshold if config.threshold is not None else calibration.threshold,
        target_rate=calibration.expected_escalation_rate,
        target_miss_rate=calibration.expected_miss_rate,
        adaptive=config.adaptive_router,
        explore=config.explore if config.adaptive_router else 0.0,
        per_minute=config.escalations_per_minute,
        per_day=config.escalations_per_day,
        latency_budget_ms=config.latency_budget_ms,
    )


async def _serve(config: AgentConfig) -> None:
    profile = _profile(config.profile)
    runtime = EdgeRuntime(config.models_dir, profile)
    identity = DeviceIdentity.load(config.data_dir)
    router = router_config(config, runtime)
    threshold = router.threshold
    state = AgentState(
        config=config,
        profile=profile,
        runtime=runtime,
        identity=identity,
        router=RouterState.initial(router, now=time.monotonic()),
    )
    if config.allow_simulated_tee:
        log.warning(
            "allow_simulated_tee is set: this agent accepts INSECURE simulated hub evidence"
        )

    def listening(url: str) -> None:
        log.info(
            "agent %s listening on %s (profile %s, providers %s, hub %s, threshold %.3f)",
            identity.device_id,
            url,
            profile.name,
            ",".join(runtime.providers),
            state.hub_url,
            threshold,
        )

    await serve_until_terminated(
        make_app(state),
        host=config.host,
        port=config.port,
        announce_ready=config.announce_ready,
        on_listening=listening,
    )


def cmd_run(args: argparse.Namespace) -> int:
    config = AgentConfig.load(
        Path(args.config) if args.config else None,
        {
            "data_dir": args.data_dir,
            "models_dir": args.models,
            "hub_url": args.hub,
            "profile": args.profile,
            "host": args.host,
            "port": args.port,
            "allow_simulated_tee": True if args.allow_simulated_tee else None,
            "threshold": args.threshold,
            "announce_ready": True if args.ready else None,
        },
        policy_file=Path(args.policy) if args.policy else None,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0


def cmd_profiles(_args: argparse.Namespace) -> int:
    providers = ort.get_available_providers()
    try:
        detected = detect(providers).name
    except AgentError:
        detected = None
    for profile in available_profiles():
        mark = "*" if profile.name == detected else " "
        print(f"{mark} {profile.name:16} {', '.join(profile.execution_providers)}")
    print(f"ONNX Runtime providers here: {', '.join(providers)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Escalade edge agent")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("enroll", help="enroll this device with a hub using a one-time token")
    p.add_argument("--hub", required=True, help="hub URL, e.g. http://hub.local:8443")
    p.add_argument("--token", required=True, help="one-time enrollment token")
    p.add_argument("--data-dir", default="./agent-data")
    p.add_argument("--profile", default=None, help="firmware profile (default: detect)")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("run", help="serve the local API")
    p.add_argument("--config", default=None, help="agent.toml (flags override it)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models", default=None, help="model bundle directory")
    p.add_argument("--hub", default=None, help="hub URL (default: the enrolled hub)")
    p.add_argument("--profile", default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None, help="0 picks a free port")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument(
        "--allow-simulated-tee",
        action="store_true",
        help="accept INSECURE simulated hub evidence (development only)",
    )
    p.add_argument(
        "--policy", default=None, help="attestation policy TOML (instead of [attestation])"
    )
    p.add_argument("--ready", action="store_true", help="print 'READY <url>' when listening")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("profiles", help="list firmware profiles, mark the detected one")
    p.set_defaults(func=cmd_profiles)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, expected=(AgentError, BundleError, PermissionError))


if __name__ == "__main__":
    sys.exit(main())
