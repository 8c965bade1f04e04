"""The admin API against its own OpenAPI document, with schemathesis: generated requests to
every operation of a real hub process. With a valid token nothing answers 5xx or outside the
document (status, content type, body schema); without one, every operation answers 401.

Bounded: a few dozen examples per operation (well under a minute in all)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from enrollment import enroll_request
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloud_hub.admin import Scope, create_admin_token
from cloud_hub.admin.openapi import openapi_document
from cloud_hub.admin.routes import ENDPOINTS
from cloud_hub.enrollment import create_token, enroll
from cloud_hub.store import Store, sqlite_url
from escalade.procs import hub_command
from escalade_protocol.keys import Ed25519PrivateKey

# The document the hub serves at /admin/v1/openapi.json (test_admin_api checks they are one).
schema = schemathesis.openapi.from_dict(openapi_document(ENDPOINTS))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class LiveHub:
    url: str
    token: str


def _populate(data_dir: Path) -> str:
    """A hub database with something in every listing; returns an admin token."""
    store = Store.open(sqlite_url(data_dir), migrate=True)
    try:
        token, _ = create_token(store, uses=3, auto_approve=False, note="schemathesis")
        for _ in range(2):
            enroll(store, enroll_request(token, Ed25519PrivateKey.generate()))
        return create_admin_token(store, scopes=frozenset(Scope))
    finally:
        store.close()


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[LiveHub]:
    data_dir = tmp_path_factory.mktemp("hub")
    token = _populate(data_dir)
    log = (data_dir / "hub.log").open("wb")
    process = subprocess.Popen(
        hub_command(data_dir, bundle_dir, "--allow-simulated-tee"),
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        assert line.startswith("READY "), (line, (data_dir / "hub.log").read_text())
        yield LiveHub(line.removeprefix("READY "), token)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if process.stdout is not None:
            process.stdout.close()


@schema.parametrize()
@BOUNDED
def test_no_5xx_and_every_answer_is_in_the_document(
    case: schemathesis.Case, live_hub: LiveHub
) -> None:
    case.call_and_validate(
        base_url=live_hub.url,
        headers={"Authorization": f"Bearer {live_hub.token}"},
        checks=CHECKS,
        timeout=10,
    )


@schema.parametrize()
@settings(BOUNDED, max_examples=5)
def test_without_a_token_every_operation_is_401(case: schemathesis.Case, live_hub: LiveHub) -> None:
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call(base_url=live_hub.url, timeout=10)
    assert response.status_code == 401, (case.method, case.formatted_path, response.text)
    assert response.json()["code"] == "unauthorized"
