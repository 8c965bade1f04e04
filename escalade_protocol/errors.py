"""Errors that cross the wire, each with a stable machine-readable code.

    ProtocolError           base: carries an ErrorCode and a human message
    └── (raised by codecs, envelope opening, hub pipeline stages)

Codes are part of the public API: clients branch on them, so they never change meaning.
The HTTP layer maps each code to a status in one table (`HTTP_STATUS`).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_REVOKED = "device_revoked"
    DEVICE_QUARANTINED = "device_quarantined"
    DEVICE_PENDING = "device_pending"
    EMBEDDING_REJECTED = "embedding_rejected"
    BAD_SIGNATURE = "bad_signature"
    BAD_CIPHERTEXT = "bad_ciphertext"
    STALE_TIMESTAMP = "stale_timestamp"
    REPLAYED_NONCE = "replayed_nonce"
    UNKNOWN_HUB_KEY = "unknown_hub_key"
    UNKNOWN_MODEL = "unknown_model"
    BAD_TENSOR_SHAPE = "bad_tensor_shape"
    BAD_TENSOR_DTYPE = "bad_tensor_dtype"
    NON_FINITE = "non_finite"
    BAD_TOKEN = "bad_token"  # noqa: S105 (an error code, not a secret)
    BAD_PROOF = "bad_proof"
    BAD_REQUEST = "bad_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    INFERENCE_FAILED = "inference_failed"
    STORE_UNAVAILABLE = "store_unavailable"
    # The admin API (/admin/v1).
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INTERNAL = "internal"
    # The agent's local API (it also uses NOT_FOUND and UNAUTHORIZED above).
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    NOT_READY = "not_ready"
    OUT_OF_DOMAIN = "out_of_domain"
    # Envelope v3: the HPKE suite the header names.
    UNSUPPORTED_SUITE = "unsupported_suite"
    # Signed model bundles (escalade_protocol/bundles) and their rollout.
    BUNDLE_MALFORMED = "bundle_malformed"
    BUNDLE_UNSIGNED = "bundle_unsigned"
    BUNDLE_UNTRUSTED_KEY = "bundle_untrusted_key"
    BUNDLE_SIGNATURE_INVALID = "bundle_signature_invalid"
    BUNDLE_DIGEST_MISMATCH = "bundle_digest_mismatch"
    BUNDLE_INCOMPATIBLE = "bundle_incompatible"
    BUNDLE_WARMUP_FAILED = "bundle_warmup_failed"
    # `escalade models import` (escalade/modelbuild/import_onnx.py): ONNX files from elsewhere.
    IMPORT_BAD_ONNX = "import_bad_onnx"
    IMPORT_BAD_IO = "import_bad_io"
    IMPORT_SHAPE_MISMATCH = "import_shape_mismatch"
    IMPORT_BAD_CALIBRATION = "import_bad_calibration"
    IMPORT_BAD_OUTPUT = "import_bad_output"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.MALFORMED: 400,
    ErrorCode.UNSUPPORTED_VERSION: 400,
    ErrorCode.BAD_TENSOR_SHAPE: 422,
    ErrorCode.BAD_TENSOR_DTYPE: 422,
    ErrorCode.NON_FINITE: 422,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_DEVICE: 401,
    ErrorCode.BAD_SIGNATURE: 401,
    ErrorCode.BAD_TOKEN: 401,
    ErrorCode.BAD_PROOF: 401,
    ErrorCode.DEVICE_REVOKED: 403,
    # Refused until an operator releases the device (`cloud-hub devices release ID`).
    ErrorCode.DEVICE_QUARANTINED: 403,
    # Enrolled with a token that needs approval: refused until an administrator approves it
    # (`cloud-hub admin devices approve ID`).
    ErrorCode.DEVICE_PENDING: 403,
    # The embedding failed the hub's poisoning checks; the reason names the tier.
    ErrorCode.EMBEDDING_REJECTED: 422,
    ErrorCode.BAD_CIPHERTEXT: 400,
    ErrorCode.STALE_TIMESTAMP: 401,
    ErrorCode.REPLAYED_NONCE: 409,
    # 409 tells the agent its view of the hub is out of date: re-attest, then retry.
    ErrorCode.UNKNOWN_HUB_KEY: 409,
    ErrorCode.UNKNOWN_MODEL: 404,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    # Too many requests from this client (attestation: each one costs a quote); retry later.
    ErrorCode.RATE_LIMITED: 429,
    # The hub model failed on the batch this request was in; the request may be retried.
    ErrorCode.INFERENCE_FAILED: 503,
    # The hub's database could not be reached or written; nothing was recorded.
    ErrorCode.STORE_UNAVAILABLE: 503,
    # No valid admin bearer token (missing, unknown, revoked or expired).
    ErrorCode.UNAUTHORIZED: 401,
    # A valid admin token without the scope this operation needs.
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    # The change does not apply to the object as it is now (approving an active device).
    ErrorCode.CONFLICT: 409,
    ErrorCode.INTERNAL: 500,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.FORBIDDEN_ORIGIN: 403,
    ErrorCode.NOT_READY: 503,
    # The input lies outside the model bundle's input domain (agent configured to refuse).
    ErrorCode.OUT_OF_DOMAIN: 422,
    # The envelope names an HPKE suite this hub does not know or does not accept (below its
    # minimum: a downgrade); re-attest to learn the offered suites.
    ErrorCode.UNSUPPORTED_SUITE: 400,
    # A bundle refused by its checks: nothing of it is kept. Unsigned, signed by a key that is
    # not pinned (`release_keys`), a signature that does not verify, a file or name whose
    # digest differs; incompatible: another input or class count than the running bundle.
    ErrorCode.BUNDLE_MALFORMED: 422,
    ErrorCode.BUNDLE_UNSIGNED: 422,
    ErrorCode.BUNDLE_UNTRUSTED_KEY: 422,
    ErrorCode.BUNDLE_SIGNATURE_INVALID: 422,
    ErrorCode.BUNDLE_DIGEST_MISMATCH: 422,
    ErrorCode.BUNDLE_INCOMPATIBLE: 422,
    # A model import refused (a CLI error; 422 should an admin API ever take imports).
    ErrorCode.IMPORT_BAD_ONNX: 422,
    ErrorCode.IMPORT_BAD_IO: 422,
    ErrorCode.IMPORT_SHAPE_MISMATCH: 422,
    ErrorCode.IMPORT_BAD_CALIBRATION: 422,
    ErrorCode.IMPORT_BAD_OUTPUT: 422,
    # The agent's health checks of a new bundle failed (load, warm-up or its first answers).
    ErrorCode.BUNDLE_WARMUP_FAILED: 422,
}


class ProtocolError(Exception):
    """A message was refused; `code` says why in a form programs can rely on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r})"
