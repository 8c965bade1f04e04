"""The Open Inference Protocol (KServe v2 / Triton HTTP) in front of the agent.

The model is named by the bundle's ``model_id``; it takes one input ``input`` (FP32, shape
``[-1, input_dim]``; any numeric datatype is converted) and answers, per row: ``probabilities``
(FP32), ``label`` (INT64), ``confidence`` (FP32), ``path`` and ``reason`` (BYTES: the typed
`AnswerPath` / `AnswerReason` values) and ``out_of_domain`` (BOOL). Request parameter
``route`` ("auto", "local", "hub") forces a path, as ``/v1/infer`` does.

Both the JSON tensor form and the binary tensor extension (``Inference-Header-Content-Length``)
are understood, in requests and in responses (``binary_data`` / ``binary_data_output``).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from escalade_protocol.artifacts import ENCODER_INPUT
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.messages import InferResponse, Route

HEADER_LENGTH = "Inference-Header-Content-Length"
CONTENT_TYPES = frozenset({"application/json", "application/octet-stream"})
MAX_ROWS = 1024
_DTYPES: dict[str, str] = {
    "FP32": "<f4",
    "FP64": "<f8",
    "FP16": "<f2",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
OUTPUTS = ("probabilities", "label", "confidence", "path", "reason", "out_of_domain")


class _Loose(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TensorIn(_Loose):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class OutputWanted(_Loose):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequestV2(_Loose):
    id: str | None = None
    inputs: list[TensorIn] = Field(min_length=1)
    outputs: list[OutputWanted] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


def _numbers(data: list[Any]) -> list[float]:
    flat: list[float] = []
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            flat.append(float(item))
        else:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"tensor data holds a non-number: {item!r}")
    return flat


def parse_request(
    body: bytes, header_length: str | None, *, input_dim: int
) -> tuple[InferRequestV2, npt.NDArray[np.float32]]:
    """The request and its ``input`` rows as float32 of shape (n, input_dim)."""
    binary = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"bad {HEADER_LENGTH}") from None
        if not 0 < n <= len(body):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{HEADER_LENGTH} exceeds the body")
        body, binary = body[:n], body[n:]
    try:
        request = InferRequestV2.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        message = f"invalid v2 request: {where}: {err['msg']}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message) from None
    offset = 0
    rows = None
    for tensor in request.inputs:
        size = tensor.parameters.get("binary_data_size")
        chunk = b""
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "binary_data_size exceeds the body")
            chunk, offset = binary[offset : offset + size], offset + size
        if tensor.name != ENCODER_INPUT:
            continue
        rows = _tensor(tensor, chunk if size is not None else None, input_dim=input_dim)
    if offset != len(binary):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "trailing binary data after the tensors")
    if rows is None:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"the model takes an input named {ENCODER_INPUT!r}"
        )
    return request, rows


def _tensor(tensor: TensorIn, chunk: bytes | None, *, input_dim: int) -> npt.NDArray[np.float32]:
    dtype = _DTYPES.get(tensor.datatype)
    if dtype is None:
        raise ProtocolError(
            ErrorCode.BAD_TENSOR_DTYPE, f"datatype {tensor.datatype} is not numeric"
        )
    shape = tuple(tensor.shape)
    if len(shape) == 1:
        shape = (1, *shape)
    if len(shape) != 2 or shape[1] != input_dim or not 0 < shape[0] <= MAX_ROWS:
        raise ProtocolError(
            ErrorCode.BAD_TENSOR_SHAPE,
            f"input shape {list(tensor.shape)}; the model takes [n, {input_dim}], n <= {MAX_ROWS}",
        )
    count = shape[0] * shape[1]
    if chunk is not None:
        if len(chunk) != count * np.dtype(dtype).itemsize:
            raise ProtocolError(ErrorCode.BAD_TENSOR_SHAPE, "binary tensor size disagrees")
        values = np.frombuffer(chunk, dtype=dtype).astype(np.float64)
    else:
        if tensor.data is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "input has neither data nor binary data")
        values = np.asarray(_numbers(tensor.data), dtype=np.float64)
        if values.size != count:
            raise ProtocolError(ErrorCode.BAD_TENSOR_SHAPE, "data length disagrees with shape")
    if not np.isfinite(values).all():
        raise ProtocolError(ErrorCode.NON_FINITE, "input holds NaN or infinite values")
    if np.abs(values).max(initial=0.0) > np.finfo(np.float32).max:
        raise ProtocolError(ErrorCode.NON_FINITE, "input values overflow float32")
    return values.astype(np.float32).reshape(shape)


def route_of(request: InferRequestV2) -> Route:
    route = request.parameters.get("route", "auto")
    if route not in ("auto", "local", "hub"):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "parameter route must be auto, local or hub")
    result: Route = route
    return result


def _outputs(answers: list[InferResponse]) -> dict[str, tuple[str, list[int], list[Any]]]:
    n = len(answers)
    classes = len(answers[0].probabilities)
    return {
        "probabilities": ("FP32", [n, classes], [p for a in answers for p in a.probabilities]),
        "label": ("INT64", [n], [a.label for a in answers]),
        "confidence": ("FP32", [n], [a.confidence for a in answers]),
        "path": ("BYTES", [n], [a.path.value for a in answers]),
        "reason": ("BYTES", [n], [a.reason.value for a in answers]),
        "out_of_domain": ("BOOL", [n], [a.out_of_domain for a in answers]),
    }


def _binary(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in data)
    if datatype == "BOOL":
        return np.asarray(data, dtype=np.bool_).tobytes()
    return np.asarray(data, dtype=_DTYPES[datatype]).tobytes()


def render_response(
    request: InferRequestV2, answers: list[InferResponse], *, model: str, version: int
) -> web.Response:
    parameters = {
        "hub_errors": [a.hub_error.value if a.hub_error else "" for a in answers],
        # The hub's model network, per answer (empty / null for local answers).
        "hub_models": [a.hub.models if a.hub else [] for a in answers],
        "route_reasons": [a.hub.route_reason if a.hub else "" for a in answers],
        "fusion": [a.hub.fusion if a.hub else "" for a in answers],
        "hub_cost": [
            {
                "model_us": a.hub.model_us,
                "price_micros": a.hub.price_micros,
                "request_bytes": a.hub.request_bytes,
            }
            if a.hub
            else None
            for a in answers
        ],
    }
    return render_tensors(
        request, _outputs(answers), model=model, version=version, parameters=parameters
    )


Tensors = dict[str, tuple[str, list[int], list[Any]]]


def render_tensors(
    request: InferRequestV2,
    tensors: Tensors,
    *,
    model: str,
    version: int,
    parameters: dict[str, Any],
) -> web.Response:
    """The v2 response for `tensors` (name -> datatype, shape, flat data): the outputs the
    request asks for (all, in order, by default), JSON or binary as asked."""
    wanted = request.outputs or [OutputWanted(name=name) for name in tensors]
    all_binary = bool(request.parameters.get("binary_data_output", False))
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in wanted:
        if out.name not in tensors:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"no output named {out.name!r}")
        datatype, shape, data = tensors[out.name]
        entry: dict[str, Any] = {"name": out.name, "datatype": datatype, "shape": shape}
        if out.parameters.get("binary_data", all_binary):
            chunk = _binary(datatype, data)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = data
        outputs.append(entry)
    header: dict[str, Any] = {
        "model_name": model,
        "model_version": str(version),
        "outputs": outputs,
        "parameters": parameters,
    }
    if request.id is not None:
        header["id"] = request.id
    head = json.dumps(header).encode()
    if not chunks:
        return web.Response(body=head, content_type="application/json")
    response = web.Response(body=head + b"".join(chunks))
    response.headers["Content-Type"] = "application/octet-stream"
    response.headers[HEADER_LENGTH] = str(len(head))
    return response


S = TypeVar("S")
AnswerFn = Callable[[S, npt.NDArray[np.float32], Route], Awaitable[InferResponse]]


def add_routes(app: web.Application, key: web.AppKey[Any], answer: AnswerFn[Any]) -> None:
    """Register the v2 endpoints; `key` finds the agent state, `answer` answers one row."""

    def model_name(request: web.Request) -> str:
        state = request.app[key]
        name = str(state.runtime.manifest.model_id)
        if request.match_info.get("name", name) != name:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no model named {request.match_info['name']}")
        version = request.match_info.get("version")
        if version is not None and version != str(state.runtime.manifest.model_version):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"model {name} has no version {version}")
        return name

    async def server(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "name": "escalade-edge-agent",
                "version": importlib.metadata.version("escalade"),
                "extensions": ["binary_tensor_data"],
            }
        )

    async def live(_request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(request: web.Request) -> web.Response:
        state = request.app[key]
        from edge_agent.api import health

        status = health(state)
        body = {
            "ready": state.ready,
            "degraded": status.status == "degraded",
            "reasons": [r.value for r in status.reasons],
        }
        return web.json_response(body, status=200 if state.ready else 503)

    async def model_ready(request: web.Request) -> web.Response:
        model_name(request)
        state = request.app[key]
        return web.json_response({"ready": state.ready}, status=200 if state.ready else 503)

    async def metadata(request: web.Request) -> web.Response:
        name = model_name(request)
        m = request.app[key].runtime.manifest
        return web.json_response(
            {
                "name": name,
                "versions": [str(m.model_version)],
                "platform": "escalade_cascade",
                "inputs": [{"name": ENCODER_INPUT, "datatype": "FP32", "shape": [-1, m.input_dim]}],
                "outputs": [
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, m.num_classes]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "confidence", "datatype": "FP32", "shape": [-1]},
                    {"name": "path", "datatype": "BYTES", "shape": [-1]},
                    {"name": "reason", "datatype": "BYTES", "shape": [-1]},
                    {"name": "out_of_domain", "datatype": "BOOL", "shape": [-1]},
                ],
            }
        )

    async def infer(request: web.Request) -> web.Response:
        name = model_name(request)
        state = request.app[key]
        if not state.ready:
            raise ProtocolError(ErrorCode.NOT_READY, "the agent is starting: models not warm yet")
        m = state.runtime.manifest
        body = await request.read()
        parsed, rows = parse_request(
            body, request.headers.get(HEADER_LENGTH), input_dim=int(m.input_dim)
        )
        route = route_of(parsed)
        answers = await asyncio.gather(*(answer(state, row, route) for row in rows))
        return render_response(parsed, list(answers), model=name, version=int(m.model_version))

    app.router.add_get("/v2", server)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, metadata)
        app.router.add_get(prefix + "/ready", model_ready)
        app.router.add_post(prefix + "/infer", infer)
