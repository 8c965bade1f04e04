"""The admin API over real loopback HTTP against a real hub and database (SQLite, and
PostgreSQL when ESCALADE_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from admin_stack import (
    Admin,
    admin_fixture,  # noqa: F401 (the `admin` fixture)
    error_of,
)
from enrollment import enroll_request

from cloud_hub.admin.models import (
    AuditPage,
    ChainReport,
    DeviceOut,
    DevicePage,
    TokenCreated,
    TokenList,
)
from cloud_hub.admin.openapi import openapi_document
from cloud_hub.admin.routes import ENDPOINTS, PREFIX
from cloud_hub.audit import EnrollmentEvidence
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PrivateKey

_error = error_of


def _concrete(path: str) -> str:
    return re.sub(r"\{\w+\}", str(uuid.uuid4()), path)


async def test_no_endpoint_answers_without_a_valid_token(admin: Admin) -> None:
    paths = [(e.method, _concrete(e.path)) for e in ENDPOINTS]
    paths += [("GET", "/openapi.json"), ("GET", "/nope"), ("DELETE", "/devices")]
    for method, path in paths:
        for token in (None, "esc_adm_not-a-real-token", "Basic abc", "wrong-prefix"):
            status, raw = await admin.call(method, path, token=token)
            assert status == 401, (method, path, token)
            _error(status, raw, ErrorCode.UNAUTHORIZED)


async def test_a_read_token_cannot_change_anything(admin: Admin) -> None:
    for endpoint in ENDPOINTS:
        if endpoint.method == "GET":
            continue
        status, raw = await admin.call(endpoint.method, _concrete(endpoint.path), token="read")
        assert status == 403, endpoint.path
        _error(status, raw, ErrorCode.FORBIDDEN)
    status, _ = await admin.call("GET", "/devices", token="read")
    assert status == 200


async def test_a_device_from_enrollment_to_revocation(admin: Admin) -> None:
    """Token with manual approval -> enroll -> pending -> approve -> quarantine -> release ->
    revoke, each in the audit log, the chain verifying at the end."""
    status, raw = await admin.call(
        "POST", "/enrollment-tokens", json={"uses": 2, "auto_approve": False, "ttl_hours": 1}
    )
    assert status == 201
    created = TokenCreated.model_validate_json(raw)
    device_id = await admin.enroll(created.token)

    status, raw = await admin.call("GET", "/devices?status=pending", token="read")
    page = DevicePage.model_validate_json(raw)
    assert [d.device_id for d in page.items] == [device_id]

    service = admin.state.service
    for action, status_after in [
        ("approve", "active"),
        ("quarantine", "quarantined"),
        ("release", "active"),
        ("revoke", "revoked"),
    ]:
        # Whatever this hub holds cached for the device is dropped by the change.
        service.devices.put(service.store.get_device(device_id))
        status, raw = await admin.call(
            "POST", f"/devices/{device_id}/{action}", json={"reason": f"test {action}"}
        )
        assert status == 200, raw
        assert DeviceOut.model_validate_json(raw).status == status_after
        assert service.devices.cached(device_id) is None

    status, raw = await admin.call("POST", f"/devices/{device_id}/revoke")
    assert status == 409
    _error(status, raw, ErrorCode.CONFLICT)

    status, raw = await admin.call("GET", f"/audit?device_id={device_id}", token="read")
    entries = AuditPage.model_validate_json(raw).items
    assert [e.action for e in entries] == [
        "enroll", "approve", "quarantine", "release", "revoke"
    ]  # fmt: skip
    assert entries[0].evidence == EnrollmentEvidence(profile="unknown", approved=False)
    assert all(e.actor == "admin" for e in entries[1:])
    status, raw = await admin.call("GET", "/audit/verify", token="read")
    report = ChainReport.model_validate_json(raw)
    assert report.ok
    assert report.first_broken is None


async def test_changes_that_do_not_apply_are_404_or_409(admin: Admin) -> None:
    status, raw = await admin.call("POST", f"/devices/{uuid.uuid4()}/approve")
    assert status == 404
    _error(status, raw, ErrorCode.NOT_FOUND)
    status, raw = await admin.call("GET", "/devices/not-a-uuid", token="read")
    assert status == 404
    status, raw = await admin.call("POST", "/enrollment-tokens", json={})
    device_id = await admin.enroll(TokenCreated.model_validate_json(raw).token)
    status, raw = await admin.call("POST", f"/devices/{device_id}/approve")
    assert status == 409
    assert "active" in _error(status, raw, ErrorCode.CONFLICT)


@pytest.mark.parametrize(
    "body",
    [
        {"uses": 1, "admin": True},  # unknown field
        {"uses": "5"},  # strict: no numbers as text
        {"uses": 0},
        {"ttl_hours": 0},
        {"ttl_hours": -1},
        {"ttl_hours": 1e9},
        {"note": "x" * 201},
    ],
)
async def test_request_bodies_are_strict(admin: Admin, body: dict[str, object]) -> None:
    status, raw = await admin.call("POST", "/enrollment-tokens", json=body)
    assert status == 400
    _error(status, raw, ErrorCode.BAD_REQUEST)
    status, raw = await admin.call("GET", "/enrollment-tokens", token="read")
    assert TokenList.model_validate_json(raw).items == []


async def test_unknown_query_parameters_and_bad_cursors_are_refused(admin: Admin) -> None:
    for query in ("?colour=red", "?limit=0", "?limit=501", "?cursor=xyz", "?status=happy"):
        status, raw = await admin.call("GET", "/devices" + query, token="read")
        assert status == 400, query
        _error(status, raw, ErrorCode.BAD_REQUEST)


async def test_devices_page_through_with_a_cursor(admin: Admin) -> None:
    status, raw = await admin.call("POST", "/enrollment-tokens", json={"uses": 5})
    token = TokenCreated.model_validate_json(raw).token
    enrolled = {await admin.enroll(token) for _ in range(5)}
    seen: list[uuid.UUID] = []
    cursor: str | None = ""
    pages = 0
    while cursor is not None:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        status, raw = await admin.call("GET", "/devices" + query, token="read")
        assert status == 200
        page = DevicePage.model_validate_json(raw)
        seen += [d.device_id for d in page.items]
        cursor = page.next_cursor
        pages += 1
    assert pages == 3
    assert seen == sorted(enrolled, key=str)


async def test_enrollment_tokens_list_and_revoke(admin: Admin) -> None:
    status, raw = await admin.call("POST", "/enrollment-tokens", json={"note": "lab"})
    created = TokenCreated.model_validate_json(raw)
    status, raw = await admin.call("GET", "/enrollment-tokens", token="read")
    (listed,) = TokenList.model_validate_json(raw).items
    assert (listed.token_id, listed.note, listed.uses_left) == (created.token_id, "lab", 1)
    # The secret is shown once: listings carry only its hash.
    assert created.token.encode() not in raw
    status, _ = await admin.call("POST", f"/enrollment-tokens/{created.token_id}/revoke")
    assert status == 200
    status, raw = await admin.call("POST", f"/enrollment-tokens/{created.token_id}/revoke")
    assert status == 409
    status, raw = await admin.call("POST", "/enrollment-tokens/unknown/revoke")
    assert status == 404
    status, raw = await admin.call("GET", "/audit", token="read")
    logged = [(e.action, e.actor) for e in AuditPage.model_validate_json(raw).items]
    # Who made a token and who revoked it are in the audit log.
    assert ("token_create", "admin") in logged
    assert ("token_revoke", "admin") in logged
    body = enroll_request(created.token, Ed25519PrivateKey.generate()).model_dump_json()
    async with admin.http.post(admin.url + "/v1/enroll", data=body) as response:
        assert response.status == 401


async def test_openapi_document_is_generated_from_the_models(admin: Admin) -> None:
    status, raw = await admin.call("GET", "/openapi.json", token="read")
    assert status == 200
    doc = json.loads(raw)
    # What schemathesis tests (tests/test_admin_schemathesis.py) is what the hub serves.
    assert doc == openapi_document(ENDPOINTS)
    assert doc["openapi"].startswith("3.1")
    for endpoint in ENDPOINTS:
        operation = doc["paths"][PREFIX + endpoint.path][endpoint.method.lower()]
        assert operation["security"] == [{"bearer": [endpoint.scope.value]}]
        assert "401" in operation["responses"]
    schemas = doc["components"]["schemas"]
    assert set(schemas["DeviceOut"]["properties"]) == set(DeviceOut.model_fields)
    assert schemas["TokenCreate"]["additionalProperties"] is False
    refs = set(re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', raw.decode()))
    assert refs
    assert refs <= set(schemas)
