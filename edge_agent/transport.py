"""The seam between `HubClient` and the network: a small Protocol and its aiohttp transport.

Tests give `HubClient` an in-memory transport (a real hub's handlers, or a scripted one); the
agent gives it `AiohttpTransport`. aiohttp's errors are translated here, at one boundary, into
`TransportError` with a one-line message (never a raw repr).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp

from edge_agent.errors import TransportError


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


class Transport(Protocol):
    async def post(
        self, path: str, body: bytes, *, content_type: str, timeout_s: float
    ) -> Reply: ...


class AiohttpTransport:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._http = session
        self.base_url = base_url.rstrip("/")

    async def post(self, path: str, body: bytes, *, content_type: str, timeout_s: float) -> Reply:
        url = self.base_url + path
        try:
            async with self._http.post(
                url,
                data=body,
                headers={"Content-Type": content_type},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                return Reply(response.status, await response.read())
        except TimeoutError:
            raise TransportError(
                f"hub at {self.base_url} did not answer within {timeout_s:g} s", timeout=True
            ) from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            raise TransportError(f"cannot connect to hub at {self.base_url}: {reason}") from None
        except aiohttp.ClientError as exc:
            raise TransportError(
                f"hub at {self.base_url} failed: {type(exc).__name__}: {exc}"
            ) from None
        except OSError as exc:
            raise TransportError(
                f"hub at {self.base_url} failed: {exc.strerror or type(exc).__name__}"
            ) from None
