"""HTTP plumbing shared by the hub and the agent: typed JSON in, typed errors out.

Every refusal leaves as ``{"code": ..., "message": ...}`` with the status from `HTTP_STATUS`;
an unexpected exception is logged and answered as ``internal`` (500) without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.messages import ErrorBody

log = logging.getLogger("escalade.http")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(message: BaseModel, *, status: int = 200) -> web.Response:
    return web.Response(
        body=message.model_dump_json().encode(), status=status, content_type="application/json"
    )


def error_response(error: ProtocolError) -> web.Response:
    return json_response(
        ErrorBody(code=error.code, message=error.message), status=error.http_status
    )


async def read_json(request: web.Request, model: type[M]) -> M:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, "request body is too large") from None
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid {model.__name__}: {details}") from None


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, "request body is too large") from None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProtocolError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status >= 400:
            code = ErrorCode.BAD_REQUEST if exc.status < 500 else ErrorCode.INTERNAL
            return json_response(ErrorBody(code=code, message=exc.reason), status=exc.status)
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(ProtocolError(ErrorCode.INTERNAL, "internal error"))


async def serve_until_terminated(
    app: web.Application,
    *,
    host: str,
    port: int,
    announce_ready: bool,
    on_listening: Callable[[str], None],
) -> None:
    """Serve `app` until SIGTERM (or cancellation); then close it cleanly.

    `on_listening` gets the URL once the socket is bound (port 0 picks a free one); with
    `announce_ready`, ``READY <url>`` is printed on stdout for supervisors and tests.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        url = f"http://{host}:{runner.addresses[0][1]}"
        on_listening(url)
        if announce_ready:
            print(f"READY {url}", flush=True)
        stop = asyncio.Event()
        # SIGTERM stops the service cleanly: open requests finish, state is closed.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
