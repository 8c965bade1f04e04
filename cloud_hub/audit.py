"""Typed evidence for the audit log: what each hub or operator decision rests on.

Every audit entry's evidence is one of these frozen models, tagged by `kind`, stored as its
canonical JSON. Nothing writes a free-form dict to the log.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Evidence(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class QuarantineEvidence(_Evidence):
    """The reputation that took a device over the limit, and the message that did it."""

    kind: Literal["quarantine"] = "quarantine"
    cusum: float
    messages_seen: int
    failed_checks: int
    # None when the last message's score was not finite.
    last_score: float | None
    # The tier the last message failed; None when it passed.
    last_reason: str | None
    decision_limit: float


class CohortEvidence(_Evidence):
    """A device whose window mean stands apart from its peers' (or, with peers, the reference)."""

    kind: Literal["cohort"] = "cohort"
    profile: str
    distance: float
    # Devices flagged together (collusion), or just this one.
    group: tuple[str, ...]


class KnnEvidence(_Evidence):
    """A sampled live embedding far from every clean reference cluster (the k-NN audit)."""

    kind: Literal["knn"] = "knn"
    distance: float
    threshold: float
    k: int


class AuditProofEvidence(_Evidence):
    """An audit by re-encoding that the device failed: the proof is its own signed envelope.

    The envelope's signature (by the device's enrolled key) covers the header, and the header's
    commitment binds the input the device claimed to the embedding it sent; the hub, inside the
    attested enclave, found the revealed input not to match that commitment, or the model's
    encoder to turn it into another embedding, or no reveal by the deadline. The revealed input
    itself is never kept."""

    kind: Literal["audit"] = "audit"
    # An `AuditOutcome` value: commitment_mismatch, encoding_mismatch, bad_input, no_reveal.
    outcome: str
    request_digest: str
    commitment: str
    # The whole sealed envelope (hex): header, ciphertext and the device's signature.
    envelope: str
    embedding_sha256: str
    distance: float | None
    tolerance: float
    model_version: int


class EnrollmentEvidence(_Evidence):
    """A device enrolled: the profile it reported, and whether its token approved it at once."""

    kind: Literal["enrollment"] = "enrollment"
    profile: str
    approved: bool


class LegacyEvidence(_Evidence):
    """Evidence written before entries were typed (free JSON), kept verbatim."""

    kind: Literal["legacy"] = "legacy"
    raw: str


class OperatorEvidence(_Evidence):
    """An operator's decision: the reason is in the entry itself."""

    kind: Literal["operator"] = "operator"


AuditEvidence = Annotated[
    QuarantineEvidence
    | CohortEvidence
    | KnnEvidence
    | AuditProofEvidence
    | EnrollmentEvidence
    | OperatorEvidence
    | LegacyEvidence,
    Field(discriminator="kind"),
]
EVIDENCE = TypeAdapter[AuditEvidence](AuditEvidence)


def parse_evidence(stored: str) -> AuditEvidence:
    """An entry's evidence as its model; entries from before typing come back as LegacyEvidence."""
    try:
        return EVIDENCE.validate_json(stored)
    except ValueError:
        return LegacyEvidence(raw=stored)
