"""A blocking client of the admin API (/admin/v1) for the `cloud-hub admin` commands: one
method per endpoint, bodies and answers as the same pydantic models the hub uses.

Every failure is one `AdminCallError` whose message is a single line: the hub unreachable,
no valid token (401), or the hub's `{"code", "message"}` for any other refusal.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from cloud_hub.admin.fleet_models import (
    DeviceStatsPage,
    ModelDetail,
    ModelPage,
    ModelRegister,
    ModelStatsList,
    ModelVersionOut,
    PolicyOut,
    ReplicaPage,
)
from cloud_hub.admin.models import (
    AuditPage,
    ChainReport,
    DeviceOut,
    DevicePage,
    StatusChange,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
)
from cloud_hub.store.policies import HubPolicy
from escalade_protocol.messages import ErrorBody

M = TypeVar("M", bound=BaseModel)
PREFIX = "/admin/v1"


class AdminCallError(Exception):
    """An admin API call failed; the message says why, in one line."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class AdminClient:
    def __init__(self, hub_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.base = hub_url.rstrip("/") + PREFIX
        self.token = token
        self.timeout_s = timeout_s

    def _call(
        self,
        method: str,
        path: str,
        answer: type[M],
        *,
        body: BaseModel | None = None,
        query: Mapping[str, object] | None = None,
        raw_body: tuple[bytes, str] | None = None,
    ) -> M:
        url = self.base + path
        if query:
            kept = {k: str(v) for k, v in query.items() if v is not None}
            if kept:
                url += "?" + urllib.parse.urlencode(kept)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise AdminCallError(f"--hub must be an http(s) URL, not {self.base[: -len(PREFIX)]}")
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked just above)
            url,
            method=method,
            data=raw_body[0]
            if raw_body
            else None
            if body is None
            else body.model_dump_json().encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                # A raw body (a bundle upload) comes with its own media type.
                "Content-Type": raw_body[1] if raw_body else "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            hub = self.base[: -len(PREFIX)]
            raise AdminCallError(f"hub unreachable at {hub}: {reason}") from None
        try:
            return answer.model_validate_json(raw)
        except ValidationError as exc:
            raise AdminCallError(
                f"the hub's answer is not a {answer.__name__} (a hub of another version?): "
                f"{exc.errors()[0]['msg']}"
            ) from None

    # -- enrollment tokens ----------------------------------------------------------------

    def create_token(self, body: TokenCreate) -> TokenCreated:
        return self._call("POST", "/enrollment-tokens", TokenCreated, body=body)

    def list_tokens(self) -> TokenList:
        return self._call("GET", "/enrollment-tokens", TokenList)

    def revoke_token(self, token_id: str, reason: StatusChange) -> TokenOut:
        path = f"/enrollment-tokens/{urllib.parse.quote(token_id, safe='')}/revoke"
        return self._call("POST", path, TokenOut, body=reason)

    # -- devices --------------------------------------------------------------------------

    def list_devices(
        self, *, status: str | None, profile: str | None, cursor: str | None, limit: int
    ) -> DevicePage:
        query = {"status": status, "profile": profile, "cursor": cursor, "limit": limit}
        return self._call("GET", "/devices", DevicePage, query=query)

    def get_device(self, device_id: uuid.UUID) -> DeviceOut:
        return self._call("GET", f"/devices/{device_id}", DeviceOut)

    def change_device(self, device_id: uuid.UUID, action: str, reason: StatusChange) -> DeviceOut:
        return self._call("POST", f"/devices/{device_id}/{action}", DeviceOut, body=reason)

    # -- models ---------------------------------------------------------------------------

    def register_model(self, body: ModelRegister) -> ModelVersionOut:
        return self._call("POST", "/models", ModelVersionOut, body=body)

    def list_models(self, *, cursor: str | None, limit: int) -> ModelPage:
        return self._call("GET", "/models", ModelPage, query={"cursor": cursor, "limit": limit})

    def get_model(self, model_id: str) -> ModelDetail:
        return self._call("GET", f"/models/{urllib.parse.quote(model_id, safe='')}", ModelDetail)

    # -- policy, audit, stats, replicas ---------------------------------------------------

    def get_policy(self) -> PolicyOut:
        return self._call("GET", "/policy", PolicyOut)

    def put_policy(self, policy: HubPolicy) -> PolicyOut:
        return self._call("PUT", "/policy", PolicyOut, body=policy)

    def audit(self, *, device_id: uuid.UUID | None, cursor: int | None, limit: int) -> AuditPage:
        query = {"device_id": device_id, "cursor": cursor, "limit": limit}
        return self._call("GET", "/audit", AuditPage, query=query)

    def verify_audit(self) -> ChainReport:
        return self._call("GET", "/audit/verify", ChainReport)

    def device_stats(
        self, *, since_hours: float, cursor: str | None, limit: int
    ) -> DeviceStatsPage:
        query = {"since_hours": since_hours, "cursor": cursor, "limit": limit}
        return self._call("GET", "/stats/devices", DeviceStatsPage, query=query)

    def model_stats(self, *, since_hours: float, model_id: str | None) -> ModelStatsList:
        query = {"since_hours": since_hours, "model_id": model_id}
        return self._call("GET", "/stats/models", ModelStatsList, query=query)

    def replicas(self, *, cursor: str | None, limit: int) -> ReplicaPage:
        query = {"cursor": cursor, "limit": limit}
        return self._call("GET", "/replicas", ReplicaPage, query=query)


def _refusal(exc: urllib.error.HTTPError) -> AdminCallError:
    raw = exc.read()
    try:
        body = ErrorBody.model_validate_json(raw)
    except ValidationError:
        text = raw.decode("utf-8", "replace").strip().splitlines()
        return AdminCallError(
            f"hub answered {exc.code} {exc.reason}: {text[0][:200] if text else 'no body'}",
            status=exc.code,
        )
    message = " ".join(body.message.split())
    if exc.code == 401:
        message += " (pass --token, ESCALADE_ADMIN_TOKEN or --token-file)"
    return AdminCallError(
        f"hub refused ({exc.code} {body.code.value}): {message}",
        status=exc.code,
        code=body.code.value,
    )


def dumps(model: BaseModel) -> str:
    """A model as the `--json` output prints it."""
    return json.dumps(json.loads(model.model_dump_json()), indent=2)
