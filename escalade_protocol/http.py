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
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
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


class UnreadableBody(ProtocolError):
    """The body could not be read (undecodable Content-Encoding, client gone mid-body): the
    connection is closed after the error, so aiohttp does not try to drain what is left."""


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, "request body is too large") from None
    except (RequestPayloadError, HttpProcessingError):  # a bad gzip body, say
        # Nothing more can be read: say so, or aiohttp tries to drain the rest after the
        # response and logs the same decoding error again, with a traceback.
        request.content.feed_eof()
        raise UnreadableBody(
            ErrorCode.BAD_REQUEST, "request body cannot be read (bad Content-Encoding?)"
        ) from None
    except ConnectionError:
        raise UnreadableBody(ErrorCode.BAD_REQUEST, "client closed the connection") from None


async def read_json(request: web.Request, model: type[M]) -> M:
    body = await read_body(request)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid {model.__name__}: {details}") from None


async def handle_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run `handler`; turn every refusal into ``{"code", "message"}`` with its status."""
    try:
        return await handler(request)
    except UnreadableBody as exc:
        response = error_response(exc)
        response.force_close()
        return response
    except ProtocolError as exc:
        response = error_response(exc)
        if exc.code is ErrorCode.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except Exception:
        # %r: the path is the client's, decoded; repr keeps it from forging log lines.
        log.exception("unhandled error serving %s %r", request.method, request.path)
        return error_response(ProtocolError(ErrorCode.INTERNAL, "internal error"))


error_middleware = web.middleware(handle_errors)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, ...) as our JSON errors."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        response = json_response(
            ErrorBody(
                code=ErrorCode.METHOD_NOT_ALLOWED,
                message=f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
            ),
            status=405,
        )
        response.headers["Allow"] = ",".join(allowed)
        return response
    if isinstance(exc, web.HTTPNotFound):
        message, code = f"no such endpoint: {request.path!r}", ErrorCode.NOT_FOUND
    else:
        message = exc.reason
        code = ErrorCode.BAD_REQUEST if exc.status < 500 else ErrorCode.INTERNAL
    return json_response(ErrorBody(code=code, message=message), status=exc.status)


class _MalformedHttpFilter(logging.Filter):
    """aiohttp refuses malformed HTTP (bad chunking, conflicting lengths, an unknown
    Content-Encoding) with a 400 before any handler runs, and logs each at ERROR with a
    traceback: a client could fill the log with them. They become one warning line each."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            message = " ".join(str(error.message or type(error).__name__).split())[:200]
            record.msg, record.args = "refused a malformed HTTP request: %r", (message,)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_malformed_http() -> None:
    """Install the filter above on aiohttp's server logger (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedHttpFilter) for f in logger.filters):
        logger.addFilter(_MalformedHttpFilter())


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
    quiet_malformed_http()
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
