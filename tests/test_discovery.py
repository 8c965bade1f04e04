"""Discovery's pure parts: TXT records (RFC 6763 limits, round trips through zeroconf's own
wire encoding), candidate ordering, the `hub = "auto"` configuration and announced addresses."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zeroconf import ServiceInfo

from cloud_hub.advertise import AdvertiseError, AdvertiseSettings, announced_addresses, hub_txt
from edge_agent.config import AgentConfig
from edge_agent.discovery import (
    AGENT_SERVICE,
    HUB_SERVICE,
    AgentAdvert,
    HubAdvert,
    TxtError,
    encode_txt,
    parse_agent,
    parse_hub,
)
from edge_agent.discovery.browse import Found
from edge_agent.discovery.mdns import InterfaceError, interface_addresses
from edge_agent.discovery.txt import decode_txt
from edge_agent.hub_choice import CandidateSource, CandidateView, order, smoothed

KEY_ID = bytes(range(16))


def wire(service: str, txt: dict[str, str]) -> dict[bytes, bytes | None]:
    """`txt` through zeroconf's TXT encoding and back, as a browser receives it."""
    sent = ServiceInfo(service, f"x.{service}", port=1, properties=txt)
    # Built from the raw record bytes, as zeroconf builds what it receives.
    received = ServiceInfo(service, f"x.{service}", port=1, properties=sent.text)
    return received.properties


# --- TXT ------------------------------------------------------------------------------------


def hub_advert(**kw: Any) -> HubAdvert:
    """What the hub writes (`cloud_hub.advertise`), as the agent reads it."""
    return HubAdvert.model_validate(hub_txt(**kw))


def test_a_hub_advert_round_trips_through_the_wire() -> None:
    """The hub's writer and the agent's reader agree, through zeroconf's own encoding."""
    txt = hub_txt(instance="hub-a", tee="simulated", key_id=KEY_ID, version="0.1.0")
    assert txt == {
        "txtvers": "1",
        "id": "hub-a",
        "api": "/v1",
        "tee": "simulated",
        "kfp": KEY_ID.hex(),
        "ver": "0.1.0",
    }
    advert = parse_hub(wire(HUB_SERVICE, txt))
    assert advert.kfp == KEY_ID.hex()
    assert advert.txt() == txt


@given(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=63),
    st.text(st.characters(codec="ascii", min_codepoint=33), max_size=32),
)
def test_any_hub_advert_within_limits_round_trips(instance: str, version: str) -> None:
    advert = hub_advert(instance=instance, tee="dcap", key_id=KEY_ID, version=version)
    assert parse_hub(wire(HUB_SERVICE, advert.txt())) == advert


def test_an_agent_advert_round_trips() -> None:
    advert = AgentAdvert(txtvers="1", id="dev-1", prof="raspberry-pi-4", enr="0", ver="0.1")
    parsed = parse_agent(wire(AGENT_SERVICE, advert.txt()))
    assert parsed == advert
    assert not parsed.enrolled


@pytest.mark.parametrize(
    ("items", "why"),
    [
        ({"k": "v" * 254}, "at most 255"),  # 1 + 1 + 254 = 256 bytes
        ({"": "v"}, "printable ASCII"),
        ({"a=b": "v"}, "printable ASCII"),
        ({"toolongkey": "v"}, "printable ASCII"),  # 10 characters: RFC 6763 says 9 at most
        ({"k é": "v"}, "printable ASCII"),
        ({f"k{i}": "v" * 60 for i in range(7)}, "keep it under"),
    ],
)
def test_txt_limits_are_enforced(items: dict[str, str], why: str) -> None:
    with pytest.raises(TxtError, match=why):
        encode_txt(items)


def test_an_item_of_exactly_255_bytes_is_allowed() -> None:
    assert encode_txt({"k": "v" * 253}) == {"k": "v" * 253}


def test_decoding_lowercases_keys_and_keeps_the_first_repeat() -> None:
    assert decode_txt({b"KFP": b"ab", b"kfp": b"cd", b"flag": None}) == {"kfp": "ab", "flag": ""}


def test_non_text_txt_is_refused() -> None:
    with pytest.raises(TxtError, match="not text"):
        decode_txt({b"id": b"\xff\xfe"})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kfp": "zz" * 16}, "kfp"),
        ({"kfp": "ab"}, "kfp"),
        ({"api": "/v2"}, "api"),
        ({"txtvers": "2"}, "txtvers"),
        ({"tee": ""}, "tee"),
    ],
)
def test_a_wrong_hub_advert_names_the_field(change: dict[str, str], field: str) -> None:
    txt = hub_advert(instance="h", tee="dcap", key_id=KEY_ID, version="1").txt() | change
    with pytest.raises(TxtError, match=field):
        parse_hub(wire(HUB_SERVICE, txt))


def test_a_missing_field_is_refused() -> None:
    txt = hub_advert(instance="h", tee="dcap", key_id=KEY_ID, version="1").txt()
    del txt["kfp"]
    with pytest.raises(TxtError, match="kfp"):
        parse_hub(wire(HUB_SERVICE, txt))


def test_found_prefers_ipv4_and_brackets_ipv6() -> None:
    advert = hub_advert(instance="h", tee="dcap", key_id=KEY_ID, version="1")
    both = Found(name="h", addresses=("fd00::1", "10.0.0.5"), port=8443, txt=(), advert=advert)
    assert both.url == "http://10.0.0.5:8443"
    v6 = Found(name="h", addresses=("fd00::1",), port=8443, txt=(), advert=advert)
    assert v6.url == "http://[fd00::1]:8443"
    assert Found(name="h", addresses=("10.0.0.5",), port=1, txt=(), advert=None).url is None


# --- candidate order ------------------------------------------------------------------------


def view(url: str, **kw: object) -> CandidateView:
    base: dict[str, object] = {
        "url": url,
        "sources": (CandidateSource.MDNS,),
        "attested": True,
        "verdict": "trusted",
        "allows": True,
        "outstanding": 0,
        "latency_ms": 1.0,
        "refusal": None,
    }
    base.update(kw)
    return CandidateView(**base)  # type: ignore[arg-type]


def test_attested_first_then_fewest_outstanding_then_latency_then_url() -> None:
    views = [
        view("http://e", attested=False, latency_ms=0.1),
        view("http://d", outstanding=2, latency_ms=0.1),
        view("http://c", latency_ms=None),
        view("http://b", latency_ms=5.0),
        view("http://a", latency_ms=5.0),
        view("http://z", latency_ms=0.5),
    ]
    assert [v.url for v in order(views)] == [
        "http://z",
        "http://a",
        "http://b",
        "http://c",
        "http://d",
        "http://e",
    ]


def test_refused_and_paused_candidates_are_never_ordered() -> None:
    views = [
        view("http://rogue", refusal="kfp does not match", latency_ms=0.01),
        view("http://down", allows=False, latency_ms=0.01),
        view("http://ok", latency_ms=9.0),
    ]
    assert [v.url for v in order(views)] == ["http://ok"]


views_strategy = st.lists(
    st.builds(
        view,
        st.sampled_from([f"http://h{i}" for i in range(6)]),
        attested=st.booleans(),
        healthy=st.booleans(),
        allows=st.booleans(),
        outstanding=st.integers(0, 3),
        latency_ms=st.none() | st.floats(0.01, 100.0),
        refusal=st.none() | st.just("refused"),
    ),
    max_size=8,
)


@given(views_strategy)
def test_order_properties(views: list[CandidateView]) -> None:
    ranked = order(views)
    assert all(v.refusal is None and v.allows for v in ranked)
    assert len(ranked) == sum(1 for v in views if v.usable)
    # Attested ones come first (those that have not just failed before those that have), and
    # a candidate never beats one with fewer requests out within the same tier.
    tiers = [(0 if v.healthy else 1) if v.attested else 2 for v in ranked]
    assert tiers == sorted(tiers)
    for a, b in itertools.pairwise(ranked):
        if (a.attested, a.healthy) == (b.attested, b.healthy):
            assert a.outstanding <= b.outstanding
    assert order(list(reversed(views))) == ranked  # stable whatever the input order


def test_latency_is_smoothed() -> None:
    assert smoothed(None, 10.0) == 10.0
    assert smoothed(10.0, 20.0) == pytest.approx(13.0)


# --- configuration --------------------------------------------------------------------------


def test_hub_auto_in_the_file_turns_discovery_on(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('data_dir = "/d"\nmodels_dir = "/m"\nhub = "auto"\n')
    config = AgentConfig.load(path, {}, env={})
    assert config.hub_url == "auto"
    assert config.discovers
    assert config.advertise
    assert config.discovery_interfaces == ()
    # The flag still wins over the file (static URL: no discovery).
    flagged = AgentConfig.load(path, {"hub_url": "http://hub:8443"}, env={})
    assert not flagged.discovers
    env = AgentConfig.load(path, {}, env={"ESCALADE_AGENT_HUB": "http://h:1"})
    assert env.hub_url == "http://h:1"


def test_interfaces_by_name(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'data_dir = "/d"\nmodels_dir = "/m"\ndiscovery_interfaces = ["lo"]\n'
        "discovery_ipv6 = true\nadvertise = false\n"
    )
    config = AgentConfig.load(path, {}, env={})
    assert config.discovery_interfaces == ("lo",)
    assert config.discovery_ipv6
    assert not config.advertise
    with pytest.raises(InterfaceError, match="no network interface nope0"):
        interface_addresses(["nope0"], ipv6=False)
    # Loopback is never announced: nobody on the LAN could reach it.
    with pytest.raises(InterfaceError, match="no usable address"):
        interface_addresses(["lo"], ipv6=True)


def test_a_hub_on_loopback_is_not_announced() -> None:
    with pytest.raises(AdvertiseError, match="nobody on the LAN"):
        announced_addresses(AdvertiseSettings(host="127.0.0.1"))
    assert announced_addresses(AdvertiseSettings(host="10.1.2.3")) == ["10.1.2.3"]
    with pytest.raises(AdvertiseError, match="no network interface nope0"):
        announced_addresses(AdvertiseSettings(host="0.0.0.0", interfaces=("nope0",)))


def test_the_hub_refuses_txt_past_the_limits() -> None:
    with pytest.raises(AdvertiseError, match="RFC 6763"):
        hub_txt(instance="h", tee="t" * 300, key_id=KEY_ID, version="1")
