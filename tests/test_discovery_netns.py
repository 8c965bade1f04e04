"""LAN discovery across two real hosts: network namespaces joined by a veth pair.

A real hub process runs in one namespace and announces itself over real multicast; a real
agent process in the other, configured with no hub URL (``hub = "auto"``), enrolls with the
hub it finds, attests it and escalates to it. Rogue announcements on the same LAN are listed
as refused and get nothing. Skipped, with the reason, only where namespaces cannot be made.

The namespaces' addresses exist only inside them, so the test reaches the agent's local API
(on 127.0.0.1 in its namespace) through `ip netns exec` and a few lines of stdlib Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from netns import Host, Lan, cannot_make_namespaces, hub_command, lan

from escalade.procs import migrate_hub, module_command, run_step, service, stop

pytestmark = pytest.mark.timeout(180)

NO_NETNS = cannot_make_namespaces()
needs_netns = pytest.mark.skipif(NO_NETNS is not None, reason=str(NO_NETNS))

# The agent's answer to one HTTP call, fetched from inside its namespace.
_HTTP = """
import json, sys, urllib.request, urllib.error
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=20) as r:
        print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": json.loads(e.read() or b"null")}))
"""


async def ns_http(host: Host, method: str, url: str, body: object = None) -> dict[str, Any]:
    text = json.dumps(body) if body is not None else ""
    out = await run_step(
        host.command([sys.executable, "-c", _HTTP, method, url, text]), what=f"{method} {url}"
    )
    reply: dict[str, Any] = json.loads(out)
    return reply


async def until_health(host: Host, url: str, ok: Any, *, timeout_s: float) -> dict[str, Any]:
    """Poll the agent's /v1/health (in another process) until `ok(health)` holds."""
    async with asyncio.timeout(timeout_s):
        while True:
            health = (await ns_http(host, "GET", url + "/v1/health"))["body"]
            if ok(health):
                return dict(health)
            await asyncio.sleep(0.1)


def features(bundle_dir: Path) -> list[float]:
    with np.load(bundle_dir / "test.npz") as data:
        return [float(x) for x in data["X"][0]]


def agent_config(tmp_path: Path, net: Lan, bundle_dir: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "agent"}"\nmodels_dir = "{bundle_dir}"\n'
        'hub = "auto"\nport = 0\nallow_simulated_tee = true\n'
        f'discovery_interfaces = ["{net.agent.interface}"]\ndiscovery_timeout_s = 2.0\n'
        "hub_timeout_s = 2.0\n"
    )
    return path


async def enroll_auto(net: Lan, hub_dir: Path, config: Path) -> dict[str, Any]:
    token = await run_step(
        module_command("cloud_hub.cli", "tokens", "create", "--data-dir", str(hub_dir), "--quiet"),
        what="creating a token",
    )
    out = await run_step(
        net.agent.command(
            module_command(
                "edge_agent.cli",
                "enroll",
                "--config",
                str(config),
                "--hub",
                "auto",
                f"--token={token.strip()}",
                "--json",
            )
        ),
        what="enrolling through discovery",
    )
    report: dict[str, Any] = json.loads(out)
    return report


@contextlib.asynccontextmanager
async def rogue(net: Lan, tmp_path: Path, bundle_dir: Path, mode: str) -> AsyncIterator[Path]:
    hits = tmp_path / f"{mode}.hits"
    argv = net.hub.command(
        [
            sys.executable,
            str(Path(__file__).with_name("rogue_hub.py")),
            "--mode",
            mode,
            "--host",
            net.hub.address,
            "--interface",
            net.hub.interface,
            "--models",
            str(bundle_dir),
            "--hits",
            str(hits),
        ]
    )
    async with service(f"rogue-{mode}", argv, log_dir=tmp_path):
        yield hits


@needs_netns
async def test_agent_finds_attests_and_uses_a_hub_then_notices_it_gone(
    tmp_path: Path, bundle_dir: Path
) -> None:
    """No URL anywhere: enroll, attest and escalate to the hub found; its goodbye is seen."""
    hub_dir = tmp_path / "hub"
    await migrate_hub(hub_dir)
    with lan("d") as net:
        async with service("hub", hub_command(net, hub_dir, bundle_dir), log_dir=tmp_path) as hub:
            config = agent_config(tmp_path, net, bundle_dir)
            enrolled = await enroll_auto(net, hub_dir, config)
            assert enrolled["hub_url"] == hub.url
            # The device remembers "auto", not an address: it finds its hub again.
            record = json.loads((tmp_path / "agent" / "device.json").read_text())
            assert record["hub_url"] == "auto"
            argv = net.agent.command(
                module_command("edge_agent.cli", "run", "--config", str(config), "--ready")
            )
            async with service("agent", argv, log_dir=tmp_path) as agent:
                health = await until_health(
                    net.agent, agent.url, lambda h: h["status"] == "ok", timeout_s=20
                )
                assert health["hub_url"] == hub.url
                assert health["hub_attestation"]["tee"] == "simulated"
                hubs = (await ns_http(net.agent, "GET", agent.url + "/v1/hubs"))["body"]
                assert hubs["configured"] == "auto"
                assert [(h["url"], h["sources"], h["attested"]) for h in hubs["hubs"]] == [
                    (hub.url, ["mdns"], True)
                ]
                body = {"input": features(bundle_dir), "route": "hub"}
                reply = await ns_http(net.agent, "POST", agent.url + "/v1/infer", body)
                assert reply["status"] == 200, reply
                assert reply["body"]["path"] == "escalated"
                assert reply["body"]["source"] == "hub"
                # The running agent announces itself; the operator sees it, enrolled.
                devices = await lan_devices(net, "--all")
                assert {"id": health["device_id"], "enrolled": True} in [
                    {"id": d["id"], "enrolled": d["enrolled"]} for d in devices
                ]

                await stop(hub.process)  # SIGTERM: the hub says goodbye over mDNS
                gone = await until_health(
                    net.agent, agent.url, lambda h: h["status"] == "degraded", timeout_s=5
                )
                assert "hub_unreachable" in gone["reasons"]
                reply = await ns_http(net.agent, "POST", agent.url + "/v1/infer", body)
                assert reply["body"]["path"] == "degraded"
                assert reply["body"]["source"] == "local"
    log = (tmp_path / "agent.log").read_text()
    assert "withdrawn" in log


async def lan_devices(net: Lan, *flags: str) -> list[dict[str, Any]]:
    """`cloud-hub lan-devices --json`, run on the hub's host."""
    out = await run_step(
        net.hub.command(
            module_command(
                "cloud_hub.cli",
                "lan-devices",
                "--json",
                "--timeout",
                "2",
                "--mdns-interface",
                net.hub.interface,
                *flags,
            )
        ),
        what="lan-devices",
    )
    devices: list[dict[str, Any]] = json.loads(out)["devices"]
    return devices


@needs_netns
async def test_a_device_not_enrolled_yet_is_listed_for_the_operator(tmp_path: Path) -> None:
    """`edge-agent announce` on a fresh device; `cloud-hub lan-devices` on the hub's host."""
    config = tmp_path / "agent.toml"
    with lan("l") as net:
        config.write_text(
            f'data_dir = "{tmp_path / "fresh"}"\nmodels_dir = "."\nprofile = "raspberry-pi-4"\n'
            f'discovery_interfaces = ["{net.agent.interface}"]\n'
        )
        argv = net.agent.command(
            module_command("edge_agent.cli", "announce", "--config", str(config), "--ready")
        )
        async with service("announce", argv, log_dir=tmp_path) as announced:
            devices = await lan_devices(net)
        fingerprint = announced.url.removeprefix("mdns://")
        assert [(d["id"], d["enrolled"], d["profile"]) for d in devices] == [
            (fingerprint, False, "raspberry-pi-4")
        ]
        assert devices[0]["addresses"] == [net.agent.address]
        # Gone from the list once it stops (goodbye packets).
        assert await lan_devices(net) == []


@needs_netns
async def test_rogue_hubs_are_listed_as_refused_and_get_nothing(
    tmp_path: Path, bundle_dir: Path
) -> None:
    """Evidence that does not verify, a kfp that lies: refused by discover, never used."""
    hub_dir = tmp_path / "hub"
    await migrate_hub(hub_dir)
    with lan("r") as net:
        async with (
            rogue(net, tmp_path, bundle_dir, "bad-evidence") as bad_hits,
            rogue(net, tmp_path, bundle_dir, "lying-kfp") as lying_hits,
            service("hub", hub_command(net, hub_dir, bundle_dir), log_dir=tmp_path) as hub,
        ):
            config = agent_config(tmp_path, net, bundle_dir)
            out = await run_step(
                net.agent.command(
                    module_command(
                        "edge_agent.cli",
                        "discover",
                        "--config",
                        str(config),
                        "--timeout",
                        "2",
                        "--json",
                    )
                ),
                what="discover",
            )
            hubs = {h["txt"]["id"]: h for h in json.loads(out)["hubs"]}
            real = next(h for h in hubs.values() if h["url"] == hub.url)
            assert real["attested"]
            assert real["refusal"] is None
            assert real["latency_ms"] > 0
            bad, lying = hubs["rogue-bad-evidence"], hubs["rogue-lying-kfp"]
            assert not bad["attested"]
            assert "attestation refused" in bad["refusal"]
            assert not lying["attested"]
            assert "kfp" in lying["refusal"]
            assert lying["verdict"] is not None  # its evidence verified; its claim did not

            enrolled = await enroll_auto(net, hub_dir, config)
            assert enrolled["hub_url"] == hub.url
            argv = net.agent.command(
                module_command("edge_agent.cli", "run", "--config", str(config), "--ready")
            )
            async with service("agent", argv, log_dir=tmp_path) as agent:
                await until_health(
                    net.agent, agent.url, lambda h: h["status"] == "ok", timeout_s=20
                )
                body = {"input": features(bundle_dir), "route": "hub"}
                for _ in range(5):
                    reply = await ns_http(net.agent, "POST", agent.url + "/v1/infer", body)
                    assert reply["body"]["path"] == "escalated", reply
    assert not bad_hits.exists(), bad_hits.read_text()
    assert not lying_hits.exists(), lying_hits.read_text()


_AVAHI_CONF = """[server]
host-name=escalade-avahi-test
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
[publish]
disable-publishing=yes
"""
_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def _avahi_missing() -> str | None:
    for tool in ("avahi-daemon", "avahi-browse", "dbus-daemon"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: avahi-daemon avahi-utils; .ci/run adds them)"
    return NO_NETNS


@contextlib.asynccontextmanager
async def avahi(host: Host, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """A private system bus and an avahi-daemon on `host`; yields the env to browse with."""
    socket = tmp_path / "bus.sock"
    (tmp_path / "bus.conf").write_text(_BUS_CONF.format(socket=socket))
    (tmp_path / "avahi.conf").write_text(_AVAHI_CONF.format(interface=host.interface))
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket}"}
    bus = await asyncio.create_subprocess_exec(
        "dbus-daemon", "--nofork", f"--config-file={tmp_path / 'bus.conf'}"
    )
    daemon = None
    try:
        async with asyncio.timeout(10):
            while not socket.exists():  # noqa: ASYNC110 (another process's socket file)
                await asyncio.sleep(0.02)
        log = (tmp_path / "avahi.log").open("wb")
        daemon = await asyncio.create_subprocess_exec(
            *host.command(
                [
                    "avahi-daemon",
                    "--no-drop-root",
                    "--no-chroot",
                    "--no-rlimits",
                    "-f",
                    str(tmp_path / "avahi.conf"),
                ]
            ),
            env={**os.environ, **env},
            stdout=log,
            stderr=log,
        )
        log.close()
        yield env
    finally:
        if daemon is not None:
            await stop(daemon)
        await stop(bus)


async def avahi_browse(host: Host, env: dict[str, str]) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        *host.command(["avahi-browse", "-rpt", "_escalade-hub._tcp"]),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _err = await process.communicate()
    return out.decode(errors="replace").splitlines()


@pytest.mark.skipif(_avahi_missing() is not None, reason=str(_avahi_missing()))
async def test_avahi_browse_sees_the_hub_with_its_txt_fields(
    tmp_path: Path, bundle_dir: Path
) -> None:
    """An independent mDNS implementation (Avahi), across the veth, reads what we publish.

    Avahi runs in the agent's namespace rather than the hub's: the announcement has to cross
    the wire to be seen, which is the stronger claim.
    """
    hub_dir = tmp_path / "hub"
    await migrate_hub(hub_dir)
    with lan("v") as net:
        async with (
            service("hub", hub_command(net, hub_dir, bundle_dir), log_dir=tmp_path) as hub,
            avahi(net.agent, tmp_path) as env,
        ):
            resolved: list[str] = []
            async with asyncio.timeout(30):
                while not resolved:
                    lines = await avahi_browse(net.agent, env)
                    resolved = [line for line in lines if line.startswith("=")]
                    if not resolved:
                        await asyncio.sleep(0.2)
    # =;iface;IPv4;name;type;domain;host;address;port;"txt" "txt" ...
    fields = resolved[0].split(";")
    assert fields[4] == "_escalade-hub._tcp"
    assert fields[7] == net.hub.address
    assert f"http://{fields[7]}:{fields[8]}" == hub.url
    txt = dict(item.strip('"').split("=", 1) for item in fields[9].split('" "'))
    assert txt["txtvers"] == "1"
    assert txt["api"] == "/v1"
    assert txt["tee"] == "simulated"
    assert len(txt["kfp"]) == 32
    assert txt["kfp"] in (tmp_path / "hub.log").read_text()  # the key id the hub logs
    assert {"id", "ver"} <= set(txt)


@needs_netns
async def test_a_hub_killed_mid_run_costs_no_request_when_another_is_up(
    tmp_path: Path, bundle_dir: Path
) -> None:
    """Two hubs on one database; SIGKILL one (no goodbye) while the agent escalates."""
    hub_dir = tmp_path / "hub"
    await migrate_hub(hub_dir)
    with lan("k") as net:
        async with (
            service("hub-a", hub_command(net, hub_dir, bundle_dir), log_dir=tmp_path) as hub_a,
            service("hub-b", hub_command(net, hub_dir, bundle_dir), log_dir=tmp_path) as hub_b,
        ):
            config = agent_config(tmp_path, net, bundle_dir)
            await enroll_auto(net, hub_dir, config)
            argv = net.agent.command(
                module_command("edge_agent.cli", "run", "--config", str(config), "--ready")
            )
            async with service("agent", argv, log_dir=tmp_path) as agent:

                async def both_attested() -> bool:
                    hubs = (await ns_http(net.agent, "GET", agent.url + "/v1/hubs"))["body"]
                    return sum(h["attested"] for h in hubs["hubs"]) == 2

                async with asyncio.timeout(20):
                    while not await both_attested():  # noqa: ASYNC110 (another process)
                        await asyncio.sleep(0.1)
                hubs = (await ns_http(net.agent, "GET", agent.url + "/v1/hubs"))["body"]
                assert {h["url"] for h in hubs["hubs"]} == {hub_a.url, hub_b.url}
                assert all(h["sources"] == ["mdns"] for h in hubs["hubs"])
                first = hubs["hubs"][0]["url"]  # the one in use
                doomed = hub_a if first == hub_a.url else hub_b
                body = {"input": features(bundle_dir), "route": "hub"}
                reply = await ns_http(net.agent, "POST", agent.url + "/v1/infer", body)
                assert reply["body"]["path"] == "escalated"
                doomed.process.kill()  # no goodbye: the agent learns from a failed request
                await doomed.process.wait()
                for _ in range(5):
                    reply = await ns_http(net.agent, "POST", agent.url + "/v1/infer", body)
                    assert reply["body"]["path"] == "escalated", reply
                health = (await ns_http(net.agent, "GET", agent.url + "/v1/health"))["body"]
                assert health["hub_url"] != doomed.url
