"""One admin endpoint as data (method, path, models, scope), and the helpers every handler
uses to read its query and body: the table built from these registers the routes and
generates the OpenAPI document alike."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from cloud_hub.admin.queries import NoQuery, Query
from cloud_hub.admin.tokens import Scope
from cloud_hub.escalation import EscalationService
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import read_body

Q = TypeVar("Q", bound=Query)
B = TypeVar("B", bound=BaseModel)
Handler = Callable[[web.Request, EscalationService], Awaitable[web.Response]]
NOT_FOUND_CONFLICT = (400, 401, 403, 404, 409)


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    summary: str
    handler: Handler
    response: type[BaseModel]
    body: type[BaseModel] | None = None
    query: type[Query] = NoQuery
    status: int = 200
    errors: tuple[int, ...] = field(default=(400, 401, 403))
    # PUT replaces a whole document: its body is required.
    body_required: bool = False
    # A body that is not JSON (a bundle upload): its media type, read by the handler itself.
    raw_body: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope.READ if self.method == "GET" else Scope.WRITE


def _details(exc: ValidationError, where: str) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or where}: {e['msg']}" for e in exc.errors()[:5]
    )


def parse_query(model: type[Q], request: web.Request) -> Q:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"invalid query: {_details(exc, 'query')}"
        ) from None


async def parse_body(request: web.Request, model: type[B]) -> B:
    raw = await read_body(request)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"invalid {model.__name__}: {_details(exc, 'body')}"
        ) from None


def path_uuid(request: web.Request, name: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no such {what}") from None
