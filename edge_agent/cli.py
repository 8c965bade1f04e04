"""`edge-agent`: set up this device, enroll it, serve the local API, check and install it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import onnxruntime as ort
from pydantic import BaseModel

from edge_agent.api import AgentState, HubCandidates, make_app
from edge_agent.config import AUTO, ENV_PREFIX, AgentConfig, ConfigError
from edge_agent.discovery import AgentAdvert, open_zeroconf
from edge_agent.discovery.announce import agent_advert, announce
from edge_agent.discovery.mdns import MdnsSettings
from edge_agent.discovery.survey import SurveyParams, survey
from edge_agent.domain import load_domain
from edge_agent.enrollment import enroll, read_token
from edge_agent.errors import AgentError, NotEnrolledError
from edge_agent.hub_client import HubClient
from edge_agent.identity import DeviceIdentity, load_or_create_key
from edge_agent.outbox import OUTBOX_FILE, Outbox
from edge_agent.profile import (
    Detection,
    FirmwareProfile,
    available_profiles,
    detect,
    load_profile,
    read_host,
)
from edge_agent.router import RouterConfig, RouterState
from edge_agent.runtime import EdgeRuntime
from edge_agent.service import notify, render_unit
from edge_agent.transport import AiohttpTransport
from escalade_protocol.artifacts import BundleError, load_manifest
from escalade_protocol.entrypoint import run_command
from escalade_protocol.http import serve_until_terminated
from escalade_protocol.hub_keys import suite_named
from escalade_protocol.keys import public_bytes
from escalade_protocol.messages import AgentHealth

log = logging.getLogger("edge_agent")

EXIT_CODES = """exit codes: 0 ok; 1 a check failed (status, doctor); 2 usage or runtime error.
Configuration: the TOML file (--config), then ESCALADE_AGENT_<KEY> variables, then flags."""
DEFAULT_CONFIG = Path("/etc/escalade-agent/agent.toml")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value > 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be finite and <= 1, got {text}")
    return value


def _emit(args: argparse.Namespace, data: BaseModel | dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        if isinstance(data, BaseModel):
            print(data.model_dump_json(indent=2))
        else:
            print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def _load_config(args: argparse.Namespace, **overrides: Any) -> AgentConfig:
    path = Path(args.config) if getattr(args, "config", None) else None
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return AgentConfig.load(
        path,
        overrides,
        env=os.environ,
        policy_file=Path(args.policy) if getattr(args, "policy", None) else None,
    )


def _detect(config_root: Path, machine: str | None) -> Detection:
    return detect(read_host(config_root, machine=machine))


def _profile(config: AgentConfig) -> FirmwareProfile:
    if config.profile and config.profile != "auto":
        return load_profile(config.profile)
    return _detect(config.detect_root, config.detect_machine).profile


# --- init -------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.fs_root)
    if args.profile == "auto":
        detection = _detect(root, args.machine)
        profile, why = detection.profile, list(detection.why)
    else:
        profile, why = load_profile(args.profile), ["chosen with --profile"]
    config_path = Path(args.config)
    if config_path.exists() and not args.force:
        raise AgentError(f"{config_path} exists; pass --force to overwrite it")
    data_dir = Path(args.data_dir).expanduser().absolute()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    load_or_create_key(data_dir)
    lines = [
        "# Escalade edge agent, written by `edge-agent init`. Environment variables",
        f"# {ENV_PREFIX}<KEY> and flags override these values.",
        f'data_dir = "{data_dir}"',
        f'models_dir = "{Path(args.models).expanduser().absolute()}"',
        f'profile = "{profile.name}"',
        'host = "127.0.0.1"',
        "port = 8780",
    ]
    if args.hub == AUTO:
        lines.append('hub = "auto"                    # find and attest hubs on the LAN')
    elif args.hub is not None:
        lines.append(f'hub_url = "{args.hub}"')
    if profile.router.latency_budget_ms is not None:
        lines.append(f"latency_budget_ms = {profile.router.latency_budget_ms}")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text("\n".join(lines) + "\n")
    report = {
        "config": str(config_path),
        "data_dir": str(data_dir),
        "profile": profile.name,
        "why": why,
        "hub_url": args.hub,
    }
    _emit(
        args,
        report,
        f"profile {profile.name} ({'; '.join(why)})\nwrote {config_path}; state in {data_dir}\n"
        "next: edge-agent enroll --config " + str(config_path) + " --token-file FILE",
    )
    return 0


# --- enroll -----------------------------------------------------------------------------------


def cmd_enroll(args: argparse.Namespace) -> int:
    token = read_token(token=args.token, token_file=args.token_file, stdin=sys.stdin)
    config: AgentConfig | None = None
    if args.config or args.data_dir is None or args.hub == AUTO:
        models = args.models or (None if args.config else ".")
        config = _load_config(args, data_dir=args.data_dir, models_dir=models, hub_url=args.hub)
        data_dir, hub, profile = config.data_dir, config.hub_url, _profile(config)
    else:
        data_dir, hub = Path(args.data_dir).expanduser(), args.hub
        profile = load_profile(args.profile) if args.profile else _detect(Path("/"), None).profile
    if hub is None:
        raise ConfigError("enroll needs the hub: pass --hub URL or auto, or set hub_url")
    url = hub
    if hub == AUTO:
        assert config is not None
        url = _discovered_hub(config)
    identity = asyncio.run(
        enroll(hub_url=url, token=token, data_dir=data_dir, profile=profile.name, remember=hub)
    )
    _emit(
        args,
        {"device_id": identity.device_id, "hub_url": url, "configured_hub": hub},
        f"enrolled as device {identity.device_id} with hub {url}",
    )
    return 0


def _survey_params(config: AgentConfig, listen_s: float) -> SurveyParams:
    try:
        manifest = load_manifest(config.models_dir)
    except BundleError as exc:
        raise AgentError(f"hubs are attested against this device's model bundle: {exc}") from None
    return SurveyParams(
        mdns=MdnsSettings(interfaces=config.discovery_interfaces, ipv6=config.discovery_ipv6),
        policy=config.policy,
        manifest=manifest,
        listen_s=listen_s,
        timeout_s=config.hub_timeout_s,
    )


def _discovered_hub(config: AgentConfig) -> str:
    """The best attested hub on the LAN: the token goes to no hub that is not attested."""
    found = asyncio.run(survey(_survey_params(config, config.discovery_timeout_s)))
    usable = found.usable
    if not usable or usable[0].url is None:
        refused = "; ".join(f"{h.name}: {h.refusal}" for h in found.hubs) or "none answered"
        raise AgentError(f"no attested hub found on the LAN ({refused})")
    return usable[0].url


def cmd_discover(args: argparse.Namespace) -> int:
    config = _load_config(
        args,
        data_dir=args.data_dir or ".",
        models_dir=args.models,
        allow_simulated_tee=True if args.allow_simulated_tee else None,
    )
    listen_s = args.timeout if args.timeout is not None else config.discovery_timeout_s
    found = asyncio.run(survey(_survey_params(config, listen_s)))
    lines = [
        f"{'ok     ' if h.attested else 'REFUSED'} {h.name}  {h.url or '-'}  "
        + (f"{h.latency_ms:.1f} ms  " if h.latency_ms is not None else "")
        + f"verdict={h.verdict or '-'}  "
        + " ".join(f"{k}={v}" for k, v in h.txt.items())
        + (f"\n        refused: {h.refusal}" if h.refusal else "")
        for h in found.hubs
    ]
    _emit(args, found, "\n".join(lines) or "no hub found on the LAN")
    return 0 if found.usable else 1


# --- announce ---------------------------------------------------------------------------------


def cmd_announce(args: argparse.Namespace) -> int:
    config = _load_config(args, data_dir=args.data_dir, models_dir=".", profile=args.profile)
    key = load_or_create_key(config.data_dir)
    try:
        device_id: str | None = str(DeviceIdentity.load(config.data_dir).device_id)
    except NotEnrolledError:
        device_id = None
    advert = agent_advert(
        device_id=device_id,
        public_key=public_bytes(key.public_key()),
        profile=_profile(config).name,
    )
    mdns = MdnsSettings(interfaces=config.discovery_interfaces, ipv6=config.discovery_ipv6)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_announce(mdns, advert, config.port, args.timeout, ready=args.ready))
    return 0


async def _announce(
    mdns: MdnsSettings, advert: AgentAdvert, port: int, seconds: float | None, *, ready: bool
) -> None:
    zc = open_zeroconf(mdns)
    try:
        if not await announce(zc, mdns, advert, port):
            raise AgentError("cannot announce this device on the LAN (see the log)")
        print(f"announcing device {advert.id} (enrolled: {advert.enrolled})", file=sys.stderr)
        if ready:
            print(f"READY mdns://{advert.id}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
    finally:
        await zc.async_close()  # goodbye packets: the device leaves the operator's list


# --- run --------------------------------------------------------------------------------------


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


def build_state(config: AgentConfig) -> AgentState:
    profile = _profile(config)
    runtime = EdgeRuntime(config.models_dir, profile, data_dir=config.data_dir)
    identity = DeviceIdentity.load(config.data_dir)
    return AgentState(
        config=config,
        profile=profile,
        runtime=runtime,
        identity=identity,
        router=RouterState.initial(router_config(config, runtime), now=time.monotonic()),
        domain=load_domain(config.models_dir, runtime.manifest),
        outbox=Outbox(config.data_dir / OUTBOX_FILE, max_records=config.outbox_max_records),
        api_token=config.api_token(),
    )


async def _serve(config: AgentConfig) -> None:
    state = build_state(config)
    if config.allow_simulated_tee:
        log.warning(
            "allow_simulated_tee is set: this agent accepts INSECURE simulated hub evidence"
        )

    def listening(url: str) -> None:
        log.info(
            "agent %s listening on %s (profile %s, providers %s, hub %s, threshold %.3f)",
            state.identity.device_id,
            url,
            state.profile.name,
            ",".join(state.runtime.providers),
            state.hub_url,
            state.router.threshold,
        )
        notify("READY=1\nSTATUS=serving on " + url)

    try:
        await serve_until_terminated(
            make_app(state),
            host=config.host,
            port=config.port,
            announce_ready=config.announce_ready,
            on_listening=listening,
        )
    except OSError as exc:
        raise AgentError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    finally:
        notify("STOPPING=1")


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_config(
        args,
        data_dir=args.data_dir,
        models_dir=args.models,
        hub_url=args.hub,
        profile=args.profile,
        host=args.host,
        port=args.port,
        allow_simulated_tee=True if args.allow_simulated_tee else None,
        threshold=args.threshold,
        announce_ready=True if args.ready else None,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0


# --- status and doctor ------------------------------------------------------------------------


async def _get_health(url: str) -> tuple[AgentHealth, HubCandidates | None]:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(url + "/v1/health") as response:
                body = await response.read()
            async with http.get(url + "/v1/hubs") as response:
                hubs = await response.read() if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError):
        raise AgentError(f"no agent answers at {url}") from None
    health = AgentHealth.model_validate_json(body)
    return health, HubCandidates.model_validate_json(hubs) if hubs is not None else None


def cmd_status(args: argparse.Namespace) -> int:
    config = _load_config(args, data_dir=args.data_dir, models_dir=".", port=args.port)
    url = f"http://{config.host}:{config.port}"
    health, hubs = asyncio.run(_get_health(url))
    reasons = ", ".join(r.value for r in health.reasons) or "-"
    lines = [
        f"  hub {h.url} ({','.join(h.sources)}): "
        + (f"refused: {h.refusal}" if h.refusal else "attested" if h.attested else "not attested")
        + (f", {h.latency_ms:.1f} ms" if h.latency_ms is not None else "")
        for h in (hubs.hubs if hubs is not None else [])
    ]
    b = health.bundle
    if b is not None:
        lines.append(
            f"  bundle {b.digest[:16]} ({health.model_id} v{health.model_version}), "
            f"assignment {(b.assigned_digest or 'installed')[:16]}: {b.state}"
            + (f" ({b.phase})" if b.phase != "idle" else "")
            + (f"; {b.code}: {b.detail}" if b.code else "")
        )
    _emit(
        args,
        health,
        "\n".join(
            [
                f"{health.status} (reasons: {reasons}); profile {health.profile}; "
                f"providers {', '.join(health.providers)}; hub {health.hub_url}; "
                f"outbox {health.outbox_depth} waiting, {health.outbox_dropped} dropped; "
                f"hub audits {health.audit_rate:.1%} of escalations ({health.audits} asked "
                f"of this device, {health.audits_revealed} revealed, "
                f"{health.audits_failed} failed)",
                *lines,
            ]
        ),
    )
    return 0 if health.status == "ok" else 1


async def _doctor_hub(config: AgentConfig, runtime: EdgeRuntime) -> dict[str, Any]:
    try:
        identity = DeviceIdentity.load(config.data_dir)
    except AgentError as exc:
        return {"ok": False, "enrolled": False, "detail": str(exc)}
    url = config.hub_url or identity.hub_url
    if url == AUTO:
        found = await survey(_survey_params(config, config.discovery_timeout_s))
        best = found.usable[0] if found.usable else None
        return {
            "ok": best is not None,
            "enrolled": True,
            "hub_url": AUTO,
            "attested": best is not None,
            "found": [h.url for h in found.hubs],
            "refused": {h.name: h.refusal for h in found.hubs if not h.attested},
            "detail": f"using {best.url}" if best else "no attested hub on the LAN",
        }
    async with aiohttp.ClientSession() as http:
        client = HubClient(
            AiohttpTransport(http, url),
            identity=identity,
            manifest=runtime.manifest,
            policy=config.policy,
            timeout_s=config.hub_timeout_s,
            minimum_suite=suite_named(config.min_hpke_suite),
        )
        try:
            hub = await client.attest()
        except AgentError as exc:
            verdict = client.last_verdict
            return {
                "ok": False,
                "enrolled": True,
                "hub_url": url,
                "attested": False,
                "detail": str(exc),
                "verdict": verdict.status.value if verdict else None,
            }
    return {
        "ok": True,
        "enrolled": True,
        "hub_url": url,
        "attested": True,
        "verdict": hub.verdict.status.value,
        "detail": hub.verdict.summary(),
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    config = _load_config(args, data_dir=args.data_dir, models_dir=args.models)
    checks: dict[str, Any] = {}
    detection = _detect(config.detect_root, config.detect_machine)
    profile = _profile(config)
    checks["profile"] = {
        "ok": True,
        "name": profile.name,
        "detected": detection.profile.name,
        "why": list(detection.why) if profile.name == detection.profile.name else ["configured"],
    }
    available = ort.get_available_providers()
    try:
        runtime = EdgeRuntime(config.models_dir, profile, data_dir=config.data_dir)
    except (AgentError, BundleError) as exc:
        checks["models"] = {"ok": False, "detail": str(exc)}
        checks["providers"] = {"ok": False, "available": available, "used": []}
    else:
        checks["models"] = {"ok": True, "model": runtime.manifest.model_id}
        checks["providers"] = {
            "ok": runtime.providers[0] == profile.execution_providers[0],
            "wanted": list(profile.execution_providers),
            "available": available,
            "used": runtime.providers,
        }
        checks["hub"] = asyncio.run(_doctor_hub(config, runtime))
    ok = all(c["ok"] for c in checks.values())
    text = "\n".join(
        f"{'ok  ' if c['ok'] else 'FAIL'} {name}: "
        + ", ".join(f"{k}={v}" for k, v in c.items() if k != "ok")
        for name, c in checks.items()
    )
    _emit(args, {"ok": ok, "checks": checks}, text)
    return 0 if ok else 1


# --- install-service --------------------------------------------------------------------------


def cmd_install_service(args: argparse.Namespace) -> int:
    config_path = Path(args.config).absolute()
    config = _load_config(args)
    exe = shutil.which("edge-agent") or str(Path(sys.executable).parent / "edge-agent")
    profile = _profile(config)
    unit = render_unit(
        exec_start=Path(exe),
        config=config_path,
        models_dir=config.models_dir,
        user=args.user,
        gpu=any(p != "CPUExecutionProvider" for p in profile.execution_providers),
    )
    unit_dir = Path(args.unit_dir)
    unit_dir.mkdir(parents=True, exist_ok=True)
    path = unit_dir / "escalade-agent.service"
    path.write_text(unit)
    _emit(
        args,
        {"unit": str(path), "user": args.user},
        f"wrote {path}\nnext: useradd --system {args.user}; systemctl daemon-reload; "
        "systemctl enable --now escalade-agent",
    )
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    providers = ort.get_available_providers()
    try:
        detected: str | None = _detect(Path("/"), None).profile.name
    except AgentError:
        detected = None
    profiles = available_profiles()
    _emit(
        args,
        {
            "detected": detected,
            "available_providers": providers,
            "profiles": [{"name": p.name, "providers": p.execution_providers} for p in profiles],
        },
        "\n".join(
            f"{'*' if p.name == detected else ' '} {p.name:18} {', '.join(p.execution_providers)}"
            for p in profiles
        )
        + f"\nONNX Runtime providers here: {', '.join(providers)}",
    )
    return 0


# --- parser -----------------------------------------------------------------------------------


class _Defaults(argparse.HelpFormatter):
    """Shows a flag's default when it has a real one (None: the config or detection decides)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 (one flat list of flags)
    fmt = _Defaults
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="Escalade edge agent", epilog=EXIT_CODES
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=fmt)
        p.epilog = EXIT_CODES
        return p

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = command("init", "write the config and the state folder (0700, device key 0600)")
    p.add_argument("--profile", default="auto", help="auto (detect) or a profile NAME / .toml")
    p.add_argument(
        "--hub", default=None, help="hub URL, or auto: discover on the LAN (the enrolled one)"
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="config file to write")
    p.add_argument("--data-dir", default="/var/lib/escalade-agent", help="state folder")
    p.add_argument("--models", default="/opt/escalade/models", help="model bundle folder")
    p.add_argument("--fs-root", default="/", help="read /proc and /etc under this root")
    p.add_argument("--machine", default=None, help="CPU architecture (default: this machine's)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")
    json_flag(p)
    p.set_defaults(func=cmd_init)

    p = command("enroll", "enroll this device with a hub using a one-time token")
    p.add_argument("--hub", default=None, help="hub URL or auto (default: the config's)")
    p.add_argument("--token", default=None, help="token (visible to other users: prefer a file)")
    p.add_argument("--token-file", default=None, help="read the token from FILE ('-': stdin)")
    p.add_argument("--config", default=None, help="agent.toml")
    p.add_argument("--data-dir", default=None, help="state folder (default: from the config)")
    p.add_argument("--profile", default=None, help="firmware profile (default: detect)")
    json_flag(p)
    p.set_defaults(func=cmd_enroll)

    p.add_argument("--models", default=None, help="model bundle (attests hubs with --hub auto)")

    p = command("discover", "list hubs announced on the LAN, attest each (exit 1: none usable)")
    p.add_argument("--config", default=None, help="agent.toml (policy, interfaces)")
    p.add_argument("--data-dir", default=None, help="state folder (unused, for config checks)")
    p.add_argument("--models", default=None, help="model bundle folder")
    p.add_argument("--policy", default=None, help="attestation policy TOML")
    p.add_argument("--timeout", type=float, default=None, help="seconds to listen (config's)")
    p.add_argument(
        "--allow-simulated-tee",
        action="store_true",
        help="accept INSECURE simulated hub evidence (development only)",
    )
    json_flag(p)
    p.set_defaults(func=cmd_discover)

    p = command("announce", "announce this device on the LAN (for `cloud-hub lan-devices`)")
    p.add_argument("--config", default=None, help="agent.toml (interfaces, profile)")
    p.add_argument("--data-dir", default=None, help="state folder (the device key)")
    p.add_argument("--profile", default=None, help="firmware profile (default: detect)")
    p.add_argument("--timeout", type=float, default=None, help="stop after S seconds (SIGTERM)")
    p.add_argument("--ready", action="store_true", help="print 'READY ...' once announced")
    p.set_defaults(func=cmd_announce)

    p = command("run", "serve the local API (v1 and KServe v2) until SIGTERM")
    p.add_argument("--config", default=None, help="agent.toml (env and flags override it)")
    p.add_argument("--data-dir", default=None, help="state folder (key, outbox)")
    p.add_argument("--models", default=None, help="model bundle folder")
    p.add_argument("--hub", default=None, help="hub URL or auto (default: the enrolled hub)")
    p.add_argument("--profile", default=None, help="firmware profile NAME or .toml (detect)")
    p.add_argument("--host", default=None, help="listen address (config default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=None, help="0 picks a free one (default 8780)")
    p.add_argument(
        "--threshold", type=_threshold, default=None, help="routing threshold (bundle's)"
    )
    p.add_argument(
        "--allow-simulated-tee",
        action="store_true",
        help="accept INSECURE simulated hub evidence (development only)",
    )
    p.add_argument("--policy", default=None, help="attestation policy TOML")
    p.add_argument("--ready", action="store_true", help="print 'READY <url>' when listening")
    p.set_defaults(func=cmd_run)

    p = command("status", "ask the running agent for its health (exit 1 when degraded)")
    p.add_argument("--config", default=None, help="agent.toml")
    p.add_argument("--data-dir", default=".", help="state folder (unused, for config checks)")
    p.add_argument("--port", type=_port, default=None, help="the agent's port (config's)")
    json_flag(p)
    p.set_defaults(func=cmd_status)

    p = command("doctor", "check profile, providers in use, models and the hub (exit 1: failed)")
    p.add_argument("--config", default=None, help="agent.toml")
    p.add_argument("--data-dir", default=None, help="state folder")
    p.add_argument("--models", default=None, help="model bundle folder")
    p.add_argument("--policy", default=None, help="attestation policy TOML")
    json_flag(p)
    p.set_defaults(func=cmd_doctor)

    p = command("install-service", "write a hardened systemd unit (Type=notify)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="agent.toml the unit runs")
    p.add_argument("--unit-dir", default="/etc/systemd/system", help="where to write the unit")
    p.add_argument("--user", default="escalade-agent", help="dedicated user to run as")
    json_flag(p)
    p.set_defaults(func=cmd_install_service)

    p = command("profiles", "list firmware profiles, mark the detected one")
    json_flag(p)
    p.set_defaults(func=cmd_profiles)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, expected=(AgentError, BundleError, PermissionError))


if __name__ == "__main__":
    sys.exit(main())
