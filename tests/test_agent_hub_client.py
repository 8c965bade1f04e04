"""The agent's side of the hub: check_bundle (pure), the breaker (pure), HubClient over an
injected transport and clock — a hub that keeps real keys, real simulated evidence and signs
real answers, but that a test can kill, slow down, restart or make refuse, without sleeping."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attestation import AppraisalPolicy, SimulatedAttester, code_measurement
from cloud_hub.identity import HubIdentity
from edge_agent.breaker import Breaker, BreakerState
from edge_agent.bundle_check import BundleFailure, check_bundle
from edge_agent.errors import AttestationRefused, HubUnavailable, TransportError
from edge_agent.hub_client import HubClient
from edge_agent.identity import DeviceIdentity
from edge_agent.transport import Reply
from escalade_protocol import envelope
from escalade_protocol.answer import Answer, request_digest, sign_answer
from escalade_protocol.artifacts import ModelManifest, load_manifest
from escalade_protocol.errors import HTTP_STATUS, ErrorCode
from escalade_protocol.hub_keys import OfferedKey, offered_pairs
from escalade_protocol.keys import Ed25519PrivateKey, hub_key_id
from escalade_protocol.messages import (
    AnswerReason,
    AttestationRequest,
    ErrorBody,
    HubModelInfo,
)
from escalade_protocol.tensor import Tensor

SIMULATED = AppraisalPolicy(allow_simulated_tee=True)
NONCE = bytes(range(32))


@pytest.fixture(scope="module")
def manifest(bundle_dir: Path) -> ModelManifest:
    return load_manifest(bundle_dir)


def model_info(manifest: ModelManifest, version: int | None = None) -> HubModelInfo:
    return HubModelInfo(
        model_id=manifest.model_id,
        model_version=version or manifest.model_version,
        embedding_dim=manifest.embedding_dim,
        num_classes=manifest.num_classes,
        wire_dtype=manifest.wire_dtype,
    )


# --- check_bundle --------------------------------------------------------------------------------


def test_a_genuine_bundle_is_trusted(manifest: ModelManifest) -> None:
    hub = HubIdentity.generate()
    bundle = hub.attest(SimulatedAttester(code_measurement()), NONCE, model_info(manifest))
    check = check_bundle(bundle, nonce=NONCE, policy=SIMULATED, manifest=manifest)
    assert check.trusted
    assert check.keys is not None
    assert check.keys.key_id == hub.key_id
    assert check.verdict is not None
    assert check.verdict.insecure


TAMPERINGS = ("nonce", "key_id", "model", "strict_policy")


@given(st.sets(st.sampled_from(TAMPERINGS)))
def test_check_bundle_lists_every_failed_check(manifest: ModelManifest, tamper: set[str]) -> None:
    """Each tampering yields its failure, and only those: no first-error-wins."""
    hub = HubIdentity.generate()
    other = HubIdentity.generate()
    version = manifest.model_version + 1 if "model" in tamper else None
    bundle = hub.attest(SimulatedAttester(code_measurement()), NONCE, model_info(manifest, version))
    if "key_id" in tamper:
        bundle = bundle.model_copy(update={"hub_key_id": other.key_id})
    asked = bytes(32) if "nonce" in tamper else NONCE
    policy = AppraisalPolicy() if "strict_policy" in tamper else SIMULATED
    check = check_bundle(bundle, nonce=asked, policy=policy, manifest=manifest)
    expected = set()
    if "nonce" in tamper:
        # Our nonce is not the one bound into the evidence: the binding fails too.
        expected |= {BundleFailure.NONCE_MISMATCH, BundleFailure.EVIDENCE_REFUSED}
    if "key_id" in tamper:
        expected.add(BundleFailure.KEY_ID_MISMATCH)
    if "model" in tamper:
        expected.add(BundleFailure.MODEL_MISMATCH)
    if "strict_policy" in tamper:
        expected.add(BundleFailure.EVIDENCE_REFUSED)
    assert set(check.failures) == expected
    assert check.trusted == (not expected)
    assert (check.keys is None) == bool(expected)


MLKEM = envelope.HpkeSuiteId.MLKEM768_X25519
X25519 = envelope.HpkeSuiteId.X25519


@pytest.mark.parametrize(
    ("offered", "minimum", "chosen"),
    [
        ({X25519, MLKEM}, X25519, MLKEM),
        ({X25519, MLKEM}, MLKEM, MLKEM),
        ({MLKEM}, X25519, MLKEM),
        ({X25519}, X25519, X25519),
        ({X25519}, MLKEM, None),
    ],
)
def test_the_agent_seals_with_the_strongest_suite_both_support(
    manifest: ModelManifest,
    offered: set[envelope.HpkeSuiteId],
    minimum: envelope.HpkeSuiteId,
    chosen: envelope.HpkeSuiteId | None,
) -> None:
    hub = HubIdentity.generate(offered)
    bundle = hub.attest(SimulatedAttester(code_measurement()), NONCE, model_info(manifest))
    check = check_bundle(
        bundle, nonce=NONCE, policy=SIMULATED, manifest=manifest, minimum_suite=minimum
    )
    if chosen is None:
        assert check.failures == (BundleFailure.SUITE_BELOW_MINIMUM,)
        assert not check.trusted
        return
    assert check.trusted
    assert check.keys is not None
    assert check.keys.suite is chosen
    # What the agent seals to that key, the hub opens with its key for that suite.
    header = envelope.EnvelopeHeader(
        device_id=uuid.uuid4(),
        model_id=manifest.model_id,
        model_version=manifest.model_version,
        seq=1,
        timestamp_ms=1,
        nonce=bytes(16),
        hub_key_id=hub.key_id,
        suite=chosen,
    )
    tensor = Tensor.from_numpy(np.arange(4, dtype=np.float32), "float32")
    sealed = envelope.seal(
        header, tensor, device_key=Ed25519PrivateKey.generate(), hub_key=check.keys.sealing_key
    )
    hub_key = hub.private_for(chosen)
    assert hub_key is not None
    opened = envelope.parse(sealed).open_payload(hub_key)
    assert opened.embedding.encode() == tensor.encode()


@pytest.mark.parametrize("attack", ["strip", "strip_and_rename", "swap"])
def test_a_downgraded_key_bundle_is_refused(manifest: ModelManifest, attack: str) -> None:
    """A man in the middle removes or replaces the post-quantum key: the evidence no longer
    binds the bundle's keys, even when he also recomputes the key id."""
    hub = HubIdentity.generate()
    bundle = hub.attest(SimulatedAttester(code_measurement()), NONCE, model_info(manifest))
    if attack == "swap":
        mine = HubIdentity.generate().offered
        bundle = bundle.model_copy(update={"additional_keys": mine})
    else:
        bundle = bundle.model_copy(update={"additional_keys": ()})
    if attack != "strip":
        renamed = hub_key_id(
            bundle.encryption_key, bundle.signing_key, offered_pairs(bundle.additional_keys)
        )
        bundle = bundle.model_copy(update={"hub_key_id": renamed})
    check = check_bundle(bundle, nonce=NONCE, policy=SIMULATED, manifest=manifest)
    expected = {BundleFailure.EVIDENCE_REFUSED}
    if attack == "strip":
        expected.add(BundleFailure.KEY_ID_MISMATCH)
    assert set(check.failures) == expected
    assert check.keys is None


def test_a_malformed_post_quantum_key_is_a_bad_key(manifest: ModelManifest) -> None:
    hub = HubIdentity.generate()
    bundle = hub.attest(SimulatedAttester(code_measurement()), NONCE, model_info(manifest))
    short = OfferedKey(suite=MLKEM, public_key=bundle.additional_keys[0].public_key[:-1])
    twice = (*bundle.additional_keys, *bundle.additional_keys)
    for keys in ((short,), twice):
        check = check_bundle(
            bundle.model_copy(update={"additional_keys": keys}),
            nonce=NONCE,
            policy=SIMULATED,
            manifest=manifest,
        )
        assert BundleFailure.BAD_KEY in check.failures


# --- the breaker ---------------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["admit", "fail", "succeed"]), st.floats(0.0, 3.0)),
        max_size=40,
    )
)
def test_breaker_invariants(ops: list[tuple[str, float]]) -> None:
    breaker = Breaker(cooldown_s=0.25, max_cooldown_s=2.0, probe_lease_s=1.0)
    now = 0.0
    for op, dt in ops:
        now += dt
        state = breaker.state(now)
        assert (state is BreakerState.CLOSED) == (breaker.failures == 0)
        if op == "admit":
            allowed, after = breaker.admit(now)
            assert allowed == breaker.allows(now)
            if state is BreakerState.OPEN:
                assert not allowed
            if allowed and state is BreakerState.HALF_OPEN:
                # The probe holds the slot: nobody else goes until it ends or its lease does.
                assert not after.admit(now)[0]
                assert after.admit(now + 1.0)[0]
            breaker = after
        elif op == "fail":
            breaker = breaker.failed(now)
            assert breaker.state(now) is BreakerState.OPEN
            assert 0 < breaker.retry_in(now) <= 2.0 + 1e-9  # (now + cooldown) - now rounds
        else:
            breaker = breaker.succeeded()
            assert breaker.state(now) is BreakerState.CLOSED
            assert breaker.blocked_until == -math.inf


def test_breaker_cooldown_doubles_up_to_the_maximum() -> None:
    breaker = Breaker(cooldown_s=0.25, max_cooldown_s=1.0)
    waits = []
    for _ in range(5):
        breaker = breaker.failed(0.0)
        waits.append(breaker.retry_in(0.0))
    assert waits == [0.25, 0.5, 1.0, 1.0, 1.0]


# --- HubClient over a scripted hub ---------------------------------------------------------------


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedHub:
    """Real keys, real evidence, real signed answers; failures on demand."""

    info: HubModelInfo
    identity: HubIdentity = field(default_factory=HubIdentity.generate)
    down: bool = False
    slow: bool = False
    refuse: ErrorCode | None = None
    calls: list[str] = field(default_factory=list)

    def restart(self) -> None:
        self.identity = HubIdentity.generate()

    async def post(self, path: str, body: bytes, *, content_type: str, timeout_s: float) -> Reply:
        self.calls.append(path)
        if self.down:
            raise TransportError("cannot connect to hub at test: Connection refused")
        if self.slow:
            raise TransportError(f"hub did not answer within {timeout_s:g} s", timeout=True)
        if self.refuse is not None:
            error = ErrorBody(code=self.refuse, message="refused by the test")
            return Reply(HTTP_STATUS[self.refuse], error.model_dump_json().encode())
        if path == "/v1/attestation":
            nonce = AttestationRequest.model_validate_json(body).nonce
            bundle = self.identity.attest(SimulatedAttester(code_measurement()), nonce, self.info)
            return Reply(200, bundle.model_dump_json().encode())
        sealed = envelope.parse(body)
        if sealed.header.hub_key_id != self.identity.key_id:
            error = ErrorBody(code=ErrorCode.UNKNOWN_HUB_KEY, message="unknown hub key")
            return Reply(409, error.model_dump_json().encode())
        answer = Answer(
            request_digest=request_digest(body),
            hub_key_id=self.identity.key_id,
            model_id=self.info.model_id,
            model_version=self.info.model_version,
            label=3,
            probabilities=Tensor.from_numpy(np.full(10, 0.1, dtype=np.float32), "float32"),
            timestamp_ms=0,
        )
        return Reply(200, sign_answer(answer, self.identity.signing_key))


@pytest.fixture
def scripted(manifest: ModelManifest) -> tuple[ScriptedHub, Clock, HubClient]:
    hub = ScriptedHub(model_info(manifest))
    clock = Clock()
    device = DeviceIdentity(uuid.uuid4(), Ed25519PrivateKey.generate(), "http://test")
    client = HubClient(
        hub,
        identity=device,
        manifest=manifest,
        policy=SIMULATED,
        attestation_ttl_s=60.0,
        timeout_s=2.0,
        breaker_cooldown_s=0.5,
        breaker_max_cooldown_s=4.0,
        clock=clock,
    )
    return hub, clock, client


EMBEDDING = np.zeros(16, dtype=np.float32)


async def test_attests_once_then_again_after_the_ttl(
    scripted: tuple[ScriptedHub, Clock, HubClient],
) -> None:
    hub, clock, client = scripted
    embedding = np.zeros(client._manifest.embedding_dim, dtype=np.float32)
    assert (await client.escalate(embedding)).answer.label == 3
    await client.escalate(embedding)
    assert hub.calls.count("/v1/attestation") == 1
    clock.now += 61.0
    assert client.attested is None
    await client.escalate(embedding)
    assert hub.calls.count("/v1/attestation") == 2


async def test_a_restarted_hub_is_attested_again_and_the_request_retried(
    scripted: tuple[ScriptedHub, Clock, HubClient],
) -> None:
    hub, _clock, client = scripted
    embedding = np.zeros(client._manifest.embedding_dim, dtype=np.float32)
    await client.escalate(embedding)
    old = hub.identity.key_id
    hub.restart()
    result = await client.escalate(embedding)
    assert result.answer.hub_key_id == hub.identity.key_id != old
    assert hub.calls.count("/v1/attestation") == 2


async def test_a_dead_hub_opens_the_breaker_and_one_probe_closes_it(
    scripted: tuple[ScriptedHub, Clock, HubClient],
) -> None:
    hub, clock, client = scripted
    embedding = np.zeros(client._manifest.embedding_dim, dtype=np.float32)
    hub.down = True
    with pytest.raises(HubUnavailable) as caught:
        await client.escalate(embedding)
    assert caught.value.reason is AnswerReason.HUB_UNREACHABLE
    assert "Traceback" not in str(caught.value)
    assert client.status().breaker is BreakerState.OPEN
    assert not client.hub_up
    calls = len(hub.calls)
    with pytest.raises(HubUnavailable) as again:
        await client.escalate(embedding)
    assert again.value.reason is AnswerReason.HUB_UNREACHABLE
    assert len(hub.calls) == calls, "an open breaker must not touch the hub"

    hub.down = False
    clock.now += 0.5
    assert client.hub_up
    assert (await client.escalate(embedding)).answer.label == 3
    assert client.status().breaker is BreakerState.CLOSED
    assert client.status().failure is None


async def test_a_slow_hub_is_a_timeout_and_opens_the_breaker(
    scripted: tuple[ScriptedHub, Clock, HubClient],
) -> None:
    hub, _clock, client = scripted
    hub.slow = True
    with pytest.raises(HubUnavailable) as caught:
        await client.ensure_attested()
    assert caught.value.reason is AnswerReason.HUB_TIMEOUT
    assert client.status().failure is AnswerReason.HUB_TIMEOUT
    assert not client.hub_up


@pytest.mark.parametrize(
    ("code", "reason", "opens"),
    [
        (ErrorCode.EMBEDDING_REJECTED, AnswerReason.HUB_REJECTED, False),
        (ErrorCode.DEVICE_QUARANTINED, AnswerReason.DEVICE_REFUSED, True),
        (ErrorCode.UNKNOWN_DEVICE, AnswerReason.DEVICE_REFUSED, True),
        (ErrorCode.RATE_LIMITED, AnswerReason.HUB_RATE_LIMITED, True),
        (ErrorCode.INTERNAL, AnswerReason.HUB_UNREACHABLE, True),
    ],
)
async def test_refusals_are_typed_and_only_hub_problems_open_the_breaker(
    scripted: tuple[ScriptedHub, Clock, HubClient],
    code: ErrorCode,
    reason: AnswerReason,
    opens: bool,
) -> None:
    hub, _clock, client = scripted
    embedding = np.zeros(client._manifest.embedding_dim, dtype=np.float32)
    await client.ensure_attested()
    hub.refuse = code
    with pytest.raises(HubUnavailable) as caught:
        await client.escalate(embedding)
    assert caught.value.reason is reason
    assert caught.value.code is code
    assert client.hub_up is not opens
    assert (client.device_refusal is not None) == (reason is AnswerReason.DEVICE_REFUSED)


async def test_refused_attestation_opens_the_breaker_and_is_not_retried_at_once(
    scripted: tuple[ScriptedHub, Clock, HubClient],
) -> None:
    hub, clock, client = scripted
    client._policy = replace(SIMULATED, allow_simulated_tee=False)
    embedding = np.zeros(client._manifest.embedding_dim, dtype=np.float32)
    with pytest.raises(AttestationRefused) as caught:
        await client.escalate(embedding)
    assert caught.value.reason is AnswerReason.ATTESTATION_REFUSED
    assert BundleFailure.EVIDENCE_REFUSED in caught.value.check.failures
    for _ in range(5):
        with pytest.raises(HubUnavailable):
            await client.escalate(embedding)
    assert hub.calls.count("/v1/attestation") == 1, "no quote per request while refused"
    clock.now += 0.5
    with pytest.raises(AttestationRefused):
        await client.escalate(embedding)
    assert hub.calls.count("/v1/attestation") == 2


async def test_aiohttp_errors_become_one_line_messages(manifest: ModelManifest) -> None:
    """A dead hub over real sockets: no ClientConnectorError(ConnectionKey(...)) repr."""
    import aiohttp
    from agent_stack import free_port

    device = DeviceIdentity(uuid.uuid4(), Ed25519PrivateKey.generate(), "http://test")
    url = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as http:
        # The older constructor form (a session and base_url), which bench/escalation.py uses.
        client = HubClient(http, base_url=url, identity=device, manifest=manifest, policy=SIMULATED)
        with pytest.raises(HubUnavailable) as caught:
            await client.attest()
    message = str(caught.value)
    assert caught.value.reason is AnswerReason.HUB_UNREACHABLE
    assert message.startswith(f"cannot connect to hub at {url}: ")
    assert "ConnectionKey" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("failure", "reason", "code"),
    [
        ("down", "hub_unreachable", None),
        ("slow", "hub_timeout", None),
        ("unknown_device", "device_refused", "unknown_device"),
        ("quarantined", "device_refused", "device_quarantined"),
        ("strict", "attestation_refused", None),
    ],
)
async def test_health_is_degraded_with_the_reason(  # noqa: PLR0917 (fixtures + parameters)
    bundle_dir: Path,
    tmp_path: Path,
    manifest: ModelManifest,
    failure: str,
    reason: str,
    code: str | None,
) -> None:
    """Down, hanging, refusing the device, refusing attestation: never "ok"."""
    import json

    from edge_agent.api import health
    from edge_agent.cli import build_state
    from edge_agent.config import AgentConfig

    (tmp_path / "device.json").write_text(
        json.dumps({"device_id": str(uuid.uuid4()), "hub_url": "http://test"})
    )
    config = AgentConfig.load(
        None, {"data_dir": str(tmp_path), "models_dir": str(bundle_dir)}, env={}
    )
    state = build_state(config)
    hub = ScriptedHub(model_info(manifest))
    state.client = HubClient(
        hub,
        identity=state.identity,
        manifest=manifest,
        policy=AppraisalPolicy() if failure == "strict" else SIMULATED,
        clock=Clock(),
    )
    state.ready = True
    embedding = np.zeros(manifest.embedding_dim, dtype=np.float32)
    if failure != "strict":
        await state.client.escalate(embedding)
        assert health(state).status == "ok"
    else:  # never attested yet: degraded too, and it says so
        assert [r.value for r in health(state).reasons] == ["not_attested"]
    hub.down = failure == "down"
    hub.slow = failure == "slow"
    hub.refuse = {
        "unknown_device": ErrorCode.UNKNOWN_DEVICE,
        "quarantined": ErrorCode.DEVICE_QUARANTINED,
    }.get(failure)
    with pytest.raises(HubUnavailable):
        await state.client.escalate(embedding)
    status = health(state)
    assert status.status == "degraded"
    assert reason in {r.value for r in status.reasons}
    assert (status.hub_error.value if status.hub_error else None) == code
    assert "answering locally" in status.detail
    state.outbox.close()
