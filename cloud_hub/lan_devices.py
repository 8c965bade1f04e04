"""`cloud-hub lan-devices`: the Escalade devices announcing themselves on this LAN.

Agents announce ``_escalade-agent._tcp.local.`` with their profile and enrollment state
(`edge_agent.discovery.announce`); by default only those not enrolled yet are listed: the
devices waiting for a token. What they announce is a claim, shown as such.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from zeroconf.asyncio import AsyncServiceInfo


class LanDevice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    id: str | None
    profile: str | None
    enrolled: bool | None
    version: str | None
    addresses: list[str]
    error: str | None = None


class LanDevices(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    devices: list[LanDevice]


def device_from(info: AsyncServiceInfo) -> LanDevice:
    from edge_agent.discovery import TxtError, parse_agent

    addresses = list(info.parsed_scoped_addresses())
    try:
        advert = parse_agent(info.properties)
    except TxtError as exc:
        return LanDevice(
            name=info.name,
            id=None,
            profile=None,
            enrolled=None,
            version=None,
            addresses=addresses,
            error=str(exc),
        )
    return LanDevice(
        name=info.name,
        id=advert.id,
        profile=advert.prof,
        enrolled=advert.enrolled,
        version=advert.ver,
        addresses=addresses,
    )


def run(args: argparse.Namespace) -> int:
    # The agent's own reader of its announcement, imported when the command runs: `serve`
    # never loads edge_agent (the enclave trusts only the hub's packages).
    from edge_agent.discovery import AGENT_SERVICE, MdnsSettings, listen

    mdns = MdnsSettings(interfaces=tuple(args.mdns_interface), ipv6=args.mdns_ipv6)
    found = asyncio.run(listen(mdns, AGENT_SERVICE, device_from, args.timeout))
    shown = sorted(
        (d for d in found.values() if args.all or d.enrolled is not True), key=lambda d: d.name
    )
    report = LanDevices(devices=shown)
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    if not shown:
        print("no device on the LAN" + ("" if args.all else " waiting for enrollment"))
    for d in shown:
        state = {True: "enrolled", False: "NOT ENROLLED", None: "?"}[d.enrolled]
        detail = d.error or f"profile {d.profile}, version {d.version}"
        print(f"{state:12} {d.id or d.name}  {', '.join(d.addresses)}  {detail}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to listen (default 3)")
    p.add_argument("--all", action="store_true", help="list enrolled devices too")
    p.add_argument("--mdns-interface", action="append", default=[], help="listen on this interface")
    p.add_argument("--mdns-ipv6", action="store_true", help="listen over IPv6 as well")
    p.add_argument("--json", action="store_true")
