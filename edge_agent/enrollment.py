"""Enrolling this device with a hub, using a one-time token from the hub's administrator."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import aiohttp
from pydantic import ValidationError

from edge_agent.errors import EnrollmentError
from edge_agent.identity import DeviceIdentity, load_or_create_key
from escalade_protocol.keys import public_bytes
from escalade_protocol.messages import (
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    enrollment_proof_bytes,
)

TOKEN_MIN, TOKEN_MAX = 16, 256


def read_token(*, token: str | None, token_file: str | None, stdin: TextIO) -> str:
    """The one-time token from --token, --token-file FILE ('-': standard input), or stdin.

    A file or stdin keeps the token out of /proc/PID/cmdline, where other users can read it.
    """
    if token is not None and token_file is not None:
        raise EnrollmentError("bad_token", "pass --token or --token-file, not both")
    if token is None:
        if token_file is None or token_file == "-":  # noqa: S105 (stdin, not a secret)
            token = stdin.readline()
        else:
            try:
                token = Path(token_file).read_text()
            except OSError as exc:
                raise EnrollmentError(
                    "bad_token", f"cannot read token file {token_file}: {exc.strerror}"
                ) from None
    token = token.strip()
    if not TOKEN_MIN <= len(token) <= TOKEN_MAX:
        raise EnrollmentError(
            "bad_token",
            f"an enrollment token has {TOKEN_MIN}-{TOKEN_MAX} characters "
            f"(got {len(token)}); create one with `cloud-hub tokens create`",
        )
    return token


async def enroll(
    *, hub_url: str, token: str, data_dir: Path, profile: str, remember: str | None = None
) -> DeviceIdentity:
    """Enroll with the hub at `hub_url`; the identity records `remember` (default: that URL).

    A device enrolled through discovery remembers "auto": it finds its hub on the LAN again
    after the hub moves, rather than holding on to an address.
    """
    key = load_or_create_key(data_dir)
    public_key = public_bytes(key.public_key())
    try:
        request = EnrollRequest(
            token=token,
            public_key=public_key,
            proof=key.sign(enrollment_proof_bytes(token, public_key)),
            profile=profile[:64],
        )
    except ValidationError:
        raise EnrollmentError(
            "bad_token", f"an enrollment token has {TOKEN_MIN}-{TOKEN_MAX} characters"
        ) from None
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
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise EnrollmentError("hub_unreachable", f"cannot reach {url}: {why}") from None
    if response.status != 201:
        try:
            error = ErrorBody.model_validate_json(body)
        except ValueError:
            raise EnrollmentError(
                f"http_{response.status}", body[:200].decode(errors="replace")
            ) from None
        raise EnrollmentError(error.code.value, error.message)
    identity = DeviceIdentity(
        device_id=EnrollResponse.model_validate_json(body).device_id,
        key=key,
        hub_url=remember or hub_url,
    )
    identity.save(data_dir)
    return identity
