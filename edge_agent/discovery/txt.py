"""DNS-SD TXT records of hubs and agents (RFC 6763 section 6): pure encoding and decoding.

A TXT record is a list of ``key=value`` strings, each at most 255 bytes; keys are short
printable ASCII without ``=`` (at most 9 characters, as RFC 6763 recommends). Nothing in them
is secret or trusted: a hub's `kfp` is a claim that the agent checks against the keys the
hub's attestation evidence binds before using it.

Hub (``_escalade-hub._tcp.local.``): ``txtvers`` (1), ``id`` (instance), ``api`` (``/v1``),
``tee`` (evidence type), ``kfp`` (hex hub key id), ``ver`` (software version).
Agent (``_escalade-agent._tcp.local.``): ``txtvers``, ``id`` (device id or key fingerprint),
``prof`` (firmware profile), ``enr`` (1 enrolled, 0 not), ``ver``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

HUB_SERVICE = "_escalade-hub._tcp.local."
AGENT_SERVICE = "_escalade-agent._tcp.local."
TXT_VERSION = "1"
API_V1: Final = "/v1"
MAX_ITEM_BYTES = 255
MAX_KEY_CHARS = 9
# A whole record kept well under one Ethernet frame's worth (RFC 6763 section 6.2 suggests
# 200 bytes is typical and 400 the point to worry).
MAX_RECORD_BYTES = 400
_KEY = re.compile(r"^[\x21-\x3c\x3e-\x7e]{1,9}$")  # printable ASCII, no '=', no space
_HEX_KEY_ID = re.compile(r"^[0-9a-f]{32}$")


class TxtError(ValueError):
    """A TXT record breaks RFC 6763's limits or is not an Escalade advertisement."""


def encode_txt(items: Mapping[str, str]) -> dict[str, str]:
    """Check `items` against RFC 6763's limits; return them as zeroconf's properties."""
    total = 0
    for key, value in items.items():
        if not _KEY.match(key):
            raise TxtError(f"TXT key {key!r}: 1-{MAX_KEY_CHARS} printable ASCII, no '='")
        size = len(key.encode()) + 1 + len(value.encode())
        if size > MAX_ITEM_BYTES:
            raise TxtError(f"TXT item {key}= is {size} bytes; at most {MAX_ITEM_BYTES}")
        total += 1 + size
    if total > MAX_RECORD_BYTES:
        raise TxtError(f"TXT record is {total} bytes; keep it under {MAX_RECORD_BYTES}")
    return dict(items)


def decode_txt(properties: Mapping[bytes, bytes | None]) -> dict[str, str]:
    """zeroconf's raw properties as text; keys lower-cased (RFC 6763: case-insensitive)."""
    out: dict[str, str] = {}
    for raw_key, raw_value in properties.items():
        try:
            key = raw_key.decode("ascii").lower()
            value = (raw_value or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise TxtError("TXT record holds bytes that are not text") from None
        # RFC 6763 6.4: when a key repeats, the first one counts.
        out.setdefault(key, value)
    return out


class _Advert(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


class HubAdvert(_Advert):
    txtvers: Literal["1"]
    id: str = Field(min_length=1, max_length=63)
    api: Literal["/v1"]
    tee: str = Field(min_length=1, max_length=32)
    kfp: str = Field(pattern=_HEX_KEY_ID.pattern)
    ver: str = Field(default="", max_length=32)

    def txt(self) -> dict[str, str]:
        return encode_txt(self.model_dump())


class AgentAdvert(_Advert):
    txtvers: Literal["1"]
    id: str = Field(min_length=1, max_length=64)
    prof: str = Field(min_length=1, max_length=64)
    enr: Literal["0", "1"]
    ver: str = Field(default="", max_length=32)

    @property
    def enrolled(self) -> bool:
        return self.enr == "1"

    def txt(self) -> dict[str, str]:
        return encode_txt(self.model_dump())


_A = TypeVar("_A", bound=_Advert)


def _parse(kind: type[_A], properties: Mapping[bytes, bytes | None]) -> _A:
    try:
        return kind.model_validate(decode_txt(properties))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise TxtError(f"not an Escalade advertisement: {where}: {first['msg']}") from None


def parse_hub(properties: Mapping[bytes, bytes | None]) -> HubAdvert:
    return _parse(HubAdvert, properties)


def parse_agent(properties: Mapping[bytes, bytes | None]) -> AgentAdvert:
    return _parse(AgentAdvert, properties)
