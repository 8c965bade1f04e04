"""A real hub with its admin API on a loopback port, and admin tokens for it (tests)."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from enrollment import enroll_request

from cloud_hub.admin import Scope, create_admin_token
from cloud_hub.admin.routes import PREFIX
from cloud_hub.app import STATE, HubState, build_state, make_app
from cloud_hub.config import HubConfig
from cloud_hub.store import migrate_database
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PrivateKey
from escalade_protocol.messages import EnrollResponse, ErrorBody

DIGEST = hashlib.sha256(b"x").hexdigest()
# A model version's reference statistics, as a registration sends them.
REFERENCE = {
    "embedding_dim": 32,
    "num_classes": 10,
    "target_fpr": 0.01,
    "norm_low": 1.0,
    "norm_high": 9.0,
    "mahalanobis_low": 2.0,
    "mahalanobis_high": 12.0,
    "class_mahalanobis_high": 14.0,
    "calibration_sha256": DIGEST,
}


@dataclass
class Admin:
    url: str
    http: aiohttp.ClientSession
    state: HubState
    read_token: str
    write_token: str

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "write",
        json: Any = None,
        data: str | None = None,
    ) -> tuple[int, bytes]:
        headers = {}
        if token is not None:
            secret = {"write": self.write_token, "read": self.read_token}.get(token, token)
            headers["Authorization"] = f"Bearer {secret}"
        async with self.http.request(
            method, self.url + PREFIX + path, json=json, data=data, headers=headers
        ) as response:
            return response.status, await response.read()

    async def enroll(self, token: str) -> uuid.UUID:
        body = enroll_request(token, Ed25519PrivateKey.generate()).model_dump_json()
        async with self.http.post(self.url + "/v1/enroll", data=body) as response:
            assert response.status == 201
            return EnrollResponse.model_validate_json(await response.read()).device_id


@pytest.fixture(name="admin")
async def admin_fixture(
    database_url: str, bundle_dir: Path, tmp_path: Path
) -> AsyncIterator[Admin]:
    migrate_database(database_url)
    config = HubConfig(
        data_dir=tmp_path,
        models_dir=bundle_dir,
        database_url=database_url,
        allow_simulated_tee=True,
    )
    async with serve_admin(config) as admin:
        yield admin


@contextlib.asynccontextmanager
async def serve_admin(config: HubConfig) -> AsyncIterator[Admin]:
    """A hub built from `config` (its database migrated) on a loopback port, with tokens."""
    app = make_app(build_state(config))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state = app[STATE]
    store = state.service.store
    read = create_admin_token(store, scopes=frozenset({Scope.READ}))
    write = create_admin_token(store, scopes=frozenset({Scope.READ, Scope.WRITE}))
    try:
        async with aiohttp.ClientSession() as http:
            yield Admin(f"http://127.0.0.1:{runner.addresses[0][1]}", http, state, read, write)
    finally:
        await runner.cleanup()


def error_of(status: int, raw: bytes, code: ErrorCode) -> str:
    body = ErrorBody.model_validate_json(raw)
    assert body.code is code, (status, body)
    return body.message
