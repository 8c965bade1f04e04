"""Two network namespaces joined by a veth pair: a LAN of two hosts inside this machine.

`lan()` creates them (iproute2, needs root), yields a `Lan`, and deletes them on the way out,
also when the test fails. The addresses exist only inside the namespaces. Multicast routes
point at the veth ends, as a LAN's default route would, so mDNS flows between the two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from escalade.procs import module_command


@dataclass(frozen=True, slots=True)
class Host:
    netns: str
    interface: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass(frozen=True, slots=True)
class Lan:
    hub: Host
    agent: Host


def hub_command(net: Lan, hub_dir: Path, bundle_dir: Path, *extra: str) -> list[str]:
    """`cloud-hub serve` on the hub's host, announcing itself on its veth (simulated TEE)."""
    return net.hub.command(
        module_command(
            "cloud_hub.cli",
            "serve",
            "--data-dir",
            str(hub_dir),
            "--models",
            str(bundle_dir),
            "--host",
            net.hub.address,
            "--port",
            "0",
            "--ready",
            "--allow-simulated-tee",
            "--mdns-interface",
            net.hub.interface,
            *extra,
        )
    )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def cannot_make_namespaces() -> str | None:
    """Why this machine cannot build the LAN (None: it can)."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs as root)"
    probe = f"esc-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"cannot create a network namespace here: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@contextlib.contextmanager
def lan(tag: str) -> Iterator[Lan]:
    suffix = f"{tag}{os.getpid() % 10000}"
    hub = Host(f"esc-h-{suffix}", "vh", "10.203.7.1")
    agent = Host(f"esc-a-{suffix}", "va", "10.203.7.2")
    made: list[str] = []
    try:
        for host in (hub, agent):
            _ip("netns", "add", host.netns)
            made.append(host.netns)
        _ip(
            "link",
            "add",
            "vh",
            "netns",
            hub.netns,
            "type",
            "veth",
            "peer",
            "va",
            "netns",
            agent.netns,
        )
        for host in (hub, agent):
            ns = ("-n", host.netns)
            _ip(*ns, "link", "set", "lo", "up")
            _ip(*ns, "addr", "add", f"{host.address}/24", "dev", host.interface)
            _ip(*ns, "link", "set", host.interface, "up", "multicast", "on")
            _ip(*ns, "route", "add", "224.0.0.0/4", "dev", host.interface)
        yield Lan(hub=hub, agent=agent)
    finally:
        for netns in made:
            # Deleting a namespace removes its veth end, and with it the peer.
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
