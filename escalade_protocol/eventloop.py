"""Running a service's main coroutine on the best event loop installed.

uvloop (the `fast` extra) serves the hub's escalations with less CPU per request than asyncio's
own loop (docs/architecture.md has the figures); it is used when installed unless the operator
asks for asyncio. Nothing else changes: aiohttp runs the same on both.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]


class EventLoopUnavailable(RuntimeError):
    """uvloop was asked for but is not installed."""


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: EventLoopChoice) -> Literal["asyncio", "uvloop"]:
    if choice == "asyncio":
        return "asyncio"
    if uvloop_available():
        return "uvloop"
    if choice == "uvloop":
        raise EventLoopUnavailable(
            "uvloop is not installed: pip install 'escalade[fast]', or use --event-loop asyncio"
        )
    return "asyncio"


def run(main: Coroutine[Any, Any, None], *, choice: EventLoopChoice = "auto") -> None:
    if resolve(choice) == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
