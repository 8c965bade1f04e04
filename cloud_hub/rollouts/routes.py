"""``GET /v1/bundles/{digest}/{path}``: devices download shelved bundles, file by file.

Served by aiohttp's FileResponse, which answers HTTP Range requests (206), so a device resumes
an interrupted download where it stopped. Bundles are public, signed artifacts: integrity comes
from the digest and the release signature the device checks, not from who may read them.
"""

from __future__ import annotations

from aiohttp import web

from cloud_hub.rollouts.shelf import BundleShelf
from escalade_protocol.errors import ErrorCode, ProtocolError

PATH = "/v1/bundles/{digest}/{name:.+}"


def add_bundle_routes(app: web.Application, shelf: BundleShelf) -> None:
    async def download(request: web.Request) -> web.StreamResponse:
        path = shelf.file(request.match_info["digest"], request.match_info["name"])
        if path is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such bundle file")
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=31536000"})

    app.router.add_get(PATH, download)
