"""A loopback stand-in for AMD's Key Distribution Service, for tests only: serves the given
documents by path and query, exactly as KDS names them (`attestation.snp.kds.vcek_path`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serve_kds(docs: dict[str, bytes]) -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        key = request.path_qs.lstrip("/")
        hits.append(key)
        if key not in docs:
            raise web.HTTPNotFound
        return web.Response(body=docs[key])

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()
