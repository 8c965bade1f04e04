"""LAN discovery over mDNS / DNS-SD (docs/discovery.md): hubs announce, agents browse.

Discovery is not trust: every hub found is a claim, attested before use (`edge_agent.hub_pool`).
"""

from edge_agent.discovery.browse import Browser, Found, hub_browser, listen
from edge_agent.discovery.lan import candidates, on_lan
from edge_agent.discovery.mdns import InterfaceError, MdnsSettings, open_zeroconf
from edge_agent.discovery.txt import (
    AGENT_SERVICE,
    HUB_SERVICE,
    AgentAdvert,
    HubAdvert,
    TxtError,
    encode_txt,
    parse_agent,
    parse_hub,
)

__all__ = [
    "AGENT_SERVICE",
    "HUB_SERVICE",
    "AgentAdvert",
    "Browser",
    "Found",
    "HubAdvert",
    "InterfaceError",
    "MdnsSettings",
    "TxtError",
    "candidates",
    "encode_txt",
    "hub_browser",
    "listen",
    "on_lan",
    "open_zeroconf",
    "parse_agent",
    "parse_hub",
]
