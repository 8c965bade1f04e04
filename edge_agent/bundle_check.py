"""Checking a hub's attestation bundle: pure, offline, every failed check listed.

`check_bundle(bundle, nonce=, policy=, manifest=)` compares the hub's answer to
``POST /v1/attestation`` with what this device asked and runs: the nonce is ours, the key id is
the hash of the two keys, the keys parse, the evidence passes appraisal (and binds those keys and
our nonce), and the hub serves the model this device runs. It never raises for a bad bundle: the
result lists every failure, keylime-style, and carries the parsed keys only when all passed.

The key id and the evidence cover every sealing key the hub offers; of those suites the device
seals with the strongest at least as strong as its configured minimum (`min_hpke_suite`), and a
hub offering none is refused (`suite_below_minimum`). A bundle stripped of its post-quantum key
no longer matches its evidence, so the downgrade fails as `evidence_refused`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from attestation import AppraisalPolicy, AttestationBundle, Verdict, appraise, report_data
from escalade_protocol.artifacts import ModelManifest
from escalade_protocol.envelope import HpkeSuiteId, HubPublicKey
from escalade_protocol.errors import ProtocolError
from escalade_protocol.hub_keys import (
    SUITE_NAMES,
    load_hub_public,
    offered_pairs,
    strongest_common,
)
from escalade_protocol.keys import (
    Ed25519PublicKey,
    X25519PublicKey,
    hub_key_id,
    load_ed25519_public,
    load_x25519_public,
)


class BundleFailure(StrEnum):
    NONCE_MISMATCH = "nonce_mismatch"
    KEY_ID_MISMATCH = "key_id_mismatch"
    BAD_KEY = "bad_key"
    EVIDENCE_REFUSED = "evidence_refused"
    MODEL_MISMATCH = "model_mismatch"
    SUITE_BELOW_MINIMUM = "suite_below_minimum"


@dataclass(frozen=True, slots=True)
class HubKeys:
    key_id: bytes
    # X25519: audit reveals are sealed to it.
    encryption_key: X25519PublicKey
    signing_key: Ed25519PublicKey
    # The suite escalations are sealed with (the strongest both sides support) and its key.
    suite: HpkeSuiteId
    sealing_key: HubPublicKey


@dataclass(frozen=True, slots=True)
class BundleCheck:
    failures: tuple[BundleFailure, ...]
    verdict: Verdict | None
    keys: HubKeys | None
    detail: tuple[str, ...] = ()

    @property
    def trusted(self) -> bool:
        return not self.failures and self.keys is not None

    @property
    def only_model_mismatch(self) -> bool:
        return self.failures == (BundleFailure.MODEL_MISMATCH,)

    def summary(self) -> str:
        return "; ".join(self.detail) if self.detail else "all checks passed"


def check_bundle(
    bundle: AttestationBundle,
    *,
    nonce: bytes,
    policy: AppraisalPolicy,
    manifest: ModelManifest,
    now: datetime | None = None,
    minimum_suite: HpkeSuiteId = HpkeSuiteId.X25519,
) -> BundleCheck:
    failures: list[BundleFailure] = []
    detail: list[str] = []
    additional = offered_pairs(bundle.additional_keys)
    if not hmac.compare_digest(bundle.nonce, nonce):
        failures.append(BundleFailure.NONCE_MISMATCH)
        detail.append("hub answered another nonce")
    if not hmac.compare_digest(
        bundle.hub_key_id, hub_key_id(bundle.encryption_key, bundle.signing_key, additional)
    ):
        failures.append(BundleFailure.KEY_ID_MISMATCH)
        detail.append("hub key id does not match its keys")
    keys: HubKeys | None = None
    suites = [HpkeSuiteId.X25519, *(key.suite for key in bundle.additional_keys)]
    chosen = strongest_common(suites, minimum_suite)
    if len(set(suites)) != len(suites):
        failures.append(BundleFailure.BAD_KEY)
        detail.append("hub offers one HPKE suite twice")
    elif chosen is None:
        failures.append(BundleFailure.SUITE_BELOW_MINIMUM)
        offered = ", ".join(SUITE_NAMES[suite] for suite in suites)
        detail.append(
            f"hub offers {offered}; this device needs at least {SUITE_NAMES[minimum_suite]}"
        )
    try:
        x25519 = load_x25519_public(bundle.encryption_key)
        sealing: HubPublicKey = x25519
        for key in bundle.additional_keys:
            parsed = load_hub_public(key.suite, key.public_key)
            if key.suite is chosen:
                sealing = parsed
        keys = HubKeys(
            key_id=bundle.hub_key_id,
            encryption_key=x25519,
            signing_key=load_ed25519_public(bundle.signing_key),
            suite=chosen or HpkeSuiteId.X25519,
            sealing_key=sealing,
        )
    except ProtocolError as exc:
        failures.append(BundleFailure.BAD_KEY)
        detail.append(f"hub keys do not parse: {exc.message}")
    # Appraise against OUR nonce: evidence replayed from another session fails the binding.
    verdict = appraise(
        bundle.evidence,
        expected_report_data=report_data(
            encryption_key=bundle.encryption_key,
            signing_key=bundle.signing_key,
            nonce=nonce,
            additional_keys=additional,
        ),
        policy=policy,
        now=now,
    )
    if not verdict.allows_escalation:
        failures.append(BundleFailure.EVIDENCE_REFUSED)
        detail.append(verdict.summary())
    served = (bundle.model.model_id, bundle.model.model_version)
    # A hub may serve this device's version through an adapter into its own model's space.
    if not bundle.model.serves(manifest.model_id, manifest.model_version):
        failures.append(BundleFailure.MODEL_MISMATCH)
        detail.append(
            f"hub serves {served[0]} v{served[1]}, "
            f"this device runs {manifest.model_id} v{manifest.model_version}"
        )
    return BundleCheck(
        failures=tuple(failures),
        verdict=verdict,
        keys=keys if not failures else None,
        detail=tuple(detail),
    )
