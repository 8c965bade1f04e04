"""The admin API's OpenAPI 3.1 document, generated from the endpoint table and the same
pydantic models the handlers parse and answer with (nothing written by hand)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaValue, models_json_schema

from escalade_protocol.messages import ErrorBody

if TYPE_CHECKING:
    from cloud_hub.admin.endpoint import Endpoint

REF = "#/components/schemas/{model}"
_DESCRIPTIONS = {
    400: "Invalid request (body, query or path)",
    401: "No valid admin token",
    403: "The token lacks the scope",
    404: "No such object",
    409: "The change does not apply to the object as it is",
    413: "The body is too large",
    422: "The bundle was refused by its checks (the code says which)",
}
Mode = Literal["validation", "serialization"]


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", endpoint.path)
    ]
    schema = endpoint.query.model_json_schema()
    for name, prop in schema.get("properties", {}).items():
        params.append({"name": name, "in": "query", "required": False, "schema": prop})
    return params


def openapi_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    return _document(tuple(endpoints))


@functools.cache
def _document(endpoints: tuple[Endpoint, ...]) -> dict[str, Any]:
    from cloud_hub.admin.routes import PREFIX
    from cloud_hub.admin.tokens import Scope

    wanted: list[tuple[type[BaseModel], Mode]] = [(ErrorBody, "serialization")]
    for e in endpoints:
        wanted.append((e.response, "serialization"))
        if e.body is not None:
            wanted.append((e.body, "validation"))
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)

    def ref(model: type[BaseModel], mode: Mode) -> JsonSchemaValue:
        return refs[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        responses: dict[str, Any] = {
            str(e.status): {
                "description": e.summary,
                "content": {"application/json": {"schema": ref(e.response, "serialization")}},
            }
        }
        # Any body past the hub's --max-body-bytes is refused (413) before its handler runs.
        takes_body = e.body is not None or e.raw_body is not None
        for status in sorted({*e.errors, *((413,) if takes_body else ())}):
            responses[str(status)] = {
                "description": _DESCRIPTIONS[status],
                "content": {"application/json": {"schema": ref(ErrorBody, "serialization")}},
            }
        operation: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.handler.__name__
            if e.handler.__name__ != "handle"
            else f"{e.path.rsplit('/', 1)[-1]}_device",
            "security": [{"bearer": [e.scope.value]}],
            "parameters": _parameters(e),
            "responses": responses,
        }
        if e.body is not None:
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": ref(e.body, "validation")}},
            }
        if e.raw_body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {e.raw_body: {"schema": {"type": "string", "format": "binary"}}},
            }
        paths.setdefault(PREFIX + e.path, {})[e.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Escalade hub admin API", "version": "1"},
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`cloud-hub create-admin-token`; scopes: "
                    + ", ".join(s.value for s in Scope),
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
