"""Enrolling this device with a hub, using a one-time token from the hub's administrator."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from edge_agent.errors import EnrollmentError
from edge_agent.identity import DeviceIdentity, load_or_create_key
from escalade_protocol.keys import public_bytes
from escalade_protocol.messages import (
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    enrollment_proof_bytes,
)


async def enroll(*, hub_url: str, token: str, data_dir: Path, profile: str) -> DeviceIdentity:
    key = load_or_create_key(data_dir)
    public_key = public_bytes(key.public_key())
    request = EnrollRequest(
        token=token,
        public_key=public_key,
        proof=key.sign(enrollment_proof_bytes(token, public_key)),
        profile=profile,
    )
    url = hub_url.rstrip("/") + "/v1/enroll"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.post(
                url,
                data=request.model_dump_json(),
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise EnrollmentError("hub_unreachable", f"cannot reach {url}: {exc!r}") from exc
    if response.status != 201:
        try:
            error = ErrorBody.model_validate_json(body)
        except ValueError:
            raise EnrollmentError(
                f"http_{response.status}", body[:200].decode(errors="replace")
            ) from None
        raise EnrollmentError(error.code.value, error.message)
    identity = DeviceIdentity(
        device_id=EnrollResponse.model_validate_json(body).device_id, key=key, hub_url=hub_url
    )
    identity.save(data_dir)
    return identity
