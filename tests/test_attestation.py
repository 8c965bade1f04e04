"""Appraisal of (simulated) evidence: binding, relaxations, and every failure listed."""

from __future__ import annotations

import hashlib
import os

from attestation import (
    AppraisalPolicy,
    SimulatedAttester,
    SimulatedEvidence,
    Status,
    appraise,
    code_measurement,
    report_data,
)

ENC, SIG, NONCE = os.urandom(32), os.urandom(32), os.urandom(32)
BINDING = report_data(encryption_key=ENC, signing_key=SIG, nonce=NONCE)


def evidence(binding: bytes = BINDING, measurement: bytes = b"m" * 32) -> SimulatedEvidence:
    return SimulatedAttester(measurement).evidence(binding)


def test_binding_depends_on_every_input() -> None:
    assert len(BINDING) == 64
    assert report_data(encryption_key=SIG, signing_key=ENC, nonce=NONCE) != BINDING
    assert report_data(encryption_key=ENC, signing_key=SIG, nonce=os.urandom(32)) != BINDING
    # Length prefixes: moving a byte from one field to the next changes the hash.
    assert report_data(encryption_key=ENC + SIG[:1], signing_key=SIG[1:], nonce=NONCE) != BINDING


def test_binding_covers_every_offered_key_and_none_binds_as_before() -> None:
    # A hub offering no extra key binds exactly what earlier hubs bound.
    field = [len(v).to_bytes(2, "big") + v for v in (ENC, SIG, NONCE)]
    assert hashlib.sha512(b"escalade/v1/report-data\x00" + b"".join(field)).digest() == BINDING
    pq, other = os.urandom(1216), os.urandom(1216)
    with_pq = report_data(
        encryption_key=ENC, signing_key=SIG, nonce=NONCE, additional_keys=[(2, pq)]
    )
    assert with_pq != BINDING
    assert (
        report_data(encryption_key=ENC, signing_key=SIG, nonce=NONCE, additional_keys=[(2, other)])
        != with_pq
    )
    assert (
        report_data(encryption_key=ENC, signing_key=SIG, nonce=NONCE, additional_keys=[(3, pq)])
        != with_pq
    )


def test_simulated_evidence_is_refused_by_default() -> None:
    verdict = appraise(evidence(), expected_report_data=BINDING, policy=AppraisalPolicy())
    assert verdict.status is Status.CONTRAINDICATED
    assert [f.check for f in verdict.failures] == ["tee_type"]
    assert not verdict.allows_escalation
    assert verdict.insecure


def test_simulated_evidence_with_explicit_relaxation_is_a_warning() -> None:
    verdict = appraise(
        evidence(), expected_report_data=BINDING, policy=AppraisalPolicy(allow_simulated_tee=True)
    )
    assert verdict.status is Status.WARNING
    assert verdict.relaxations == ("allow_simulated_tee",)
    assert verdict.allows_escalation
    assert verdict.insecure


def test_every_failed_check_is_listed() -> None:
    verdict = appraise(
        evidence(binding=os.urandom(64)),
        expected_report_data=BINDING,
        policy=AppraisalPolicy(mrenclave=frozenset({b"x" * 32})),
    )
    assert {f.check for f in verdict.failures} == {"tee_type", "report_data", "mrenclave"}


def test_wrong_binding_is_refused_even_when_simulation_is_allowed() -> None:
    verdict = appraise(
        evidence(binding=report_data(encryption_key=ENC, signing_key=SIG, nonce=os.urandom(32))),
        expected_report_data=BINDING,
        policy=AppraisalPolicy(allow_simulated_tee=True),
    )
    assert verdict.status is Status.CONTRAINDICATED
    assert [f.check for f in verdict.failures] == ["report_data"]


def test_code_measurement_is_stable_and_covers_the_hub() -> None:
    first = code_measurement()
    assert first == code_measurement()
    assert first != code_measurement(("escalade_protocol",))
