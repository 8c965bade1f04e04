"""The escalation path's pure parts and its batcher: `judge`, `DynamicBatcher`, the attestation
desk's admission. No database, no HTTP: these are the decisions, tested directly."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_hub.attestation_desk import AttestationDesk, AttestationLimits
from cloud_hub.escalation import (
    Answered,
    BatchingConfig,
    DynamicBatcher,
    Quarantine,
    Refused,
    SaveReputation,
    judge,
)
from cloud_hub.poisoning import CheckResult, Reputation, ReputationParams, update
from cloud_hub.store import Device
from escalade_protocol.answer import Answer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.tensor import Tensor

PARAMS = ReputationParams()
REJECT = 1.25
ANSWER = Answer(
    request_digest=b"d" * 32,
    hub_key_id=b"k" * 16,
    model_id="m",
    model_version=1,
    label=3,
    probabilities=Tensor.from_numpy(np.full(10, 0.1, np.float32), "float32"),
    timestamp_ms=1,
)


def device(cusum: float = 0.0) -> Device:
    return Device(
        device_id=uuid.uuid4(),
        public_key=b"p" * 32,
        profile="x86-64-cpu",
        status="active",
        enrolled_at=datetime.now(UTC),
        cusum=cusum,
    )


checks = st.builds(
    lambda score, reason: CheckResult(
        passed=score <= 1, reason=None if score <= 1 else reason, score=score,
        norm=1.0, mahalanobis=math.nan, class_mahalanobis=math.nan,
    ),
    st.one_of(st.floats(0, 5, allow_nan=False), st.just(math.inf)),
    st.sampled_from(["norm", "mahalanobis", "class_mahalanobis"]),
)  # fmt: skip
reputations = st.builds(
    Reputation,
    cusum=st.floats(0, PARAMS.ceiling),
    messages=st.integers(0, 10_000),
    failures=st.integers(0, 100),
    over_limit=st.integers(0, PARAMS.hold + 2),
    state=st.sampled_from(["active", "quarantined"]),
)


@given(check=checks, before=st.one_of(st.none(), reputations))
def test_judge_follows_the_score_and_the_cusum(
    check: CheckResult, before: Reputation | None
) -> None:
    """Refused exactly over the reject band; the reputation is the CUSUM update; quarantine
    exactly on the transition; a moved CUSUM is saved; only accepted messages feed cohorts."""
    dev = device(cusum=3.0)
    outcome = judge(dev, check, before, PARAMS, answer=ANSWER, reject_score=REJECT)
    start = before if before is not None else Reputation(cusum=dev.cusum)
    assert outcome.reputation == update(start, check, PARAMS)
    rejected = not check.passed and check.score > REJECT
    if rejected:
        assert isinstance(outcome.reply, Refused)
        assert outcome.reply.code is ErrorCode.EMBEDDING_REJECTED
        assert outcome.reply.error().http_status == 422
    else:
        assert outcome.reply == Answered(ANSWER)
    crossed = start.state == "active" and outcome.reputation.state == "quarantined"
    assert isinstance(outcome.effect, Quarantine) == crossed
    if crossed:
        assert isinstance(outcome.effect, Quarantine)
        assert outcome.effect.evidence.cusum == round(outcome.reputation.cusum, 3)
        assert outcome.effect.evidence.messages_seen == outcome.reputation.messages
        assert (outcome.effect.evidence.last_score is None) == (not math.isfinite(check.score))
    elif outcome.reputation.cusum != start.cusum:
        assert outcome.effect == SaveReputation(outcome.reputation)
    else:
        assert outcome.effect is None
    assert outcome.observe_cohort == check.passed


def test_an_honest_device_at_rest_costs_no_write() -> None:
    """CUSUM 0 and a typical passing score: nothing to save, nothing to quarantine."""
    check = CheckResult(True, None, 0.5, 1.0, 1.0, 1.0)
    outcome = judge(device(), check, None, PARAMS, answer=ANSWER, reject_score=REJECT)
    assert outcome.effect is None
    assert isinstance(outcome.reply, Answered)


def test_a_drifting_device_is_quarantined_once_with_evidence() -> None:
    dev, rep = device(), None
    failing = CheckResult(False, "norm", 1.1, 9.0, math.nan, math.nan)
    effects = []
    for _ in range(200):
        outcome = judge(dev, failing, rep, PARAMS, answer=ANSWER, reject_score=REJECT)
        rep = outcome.reputation
        effects.append(outcome.effect)
        assert isinstance(outcome.reply, Answered)  # 1.1 is suspicious, not refused
    quarantines = [e for e in effects if isinstance(e, Quarantine)]
    assert len(quarantines) == 1
    assert quarantines[0].evidence.last_reason == "norm"
    assert quarantines[0].evidence.cusum >= PARAMS.decision_limit
    assert "CUSUM" in quarantines[0].reason


# -- the batcher -----------------------------------------------------------------------------


def doubled(batch: np.ndarray) -> np.ndarray:
    return (batch * 2).astype(np.float32)


@pytest.mark.parametrize("threaded", [False, True], ids=["on-loop", "model-thread"])
async def test_every_request_gets_its_own_row_and_batches_respect_the_maximum(
    threaded: bool,
) -> None:
    sizes: list[int] = []
    executor = ThreadPoolExecutor(1) if threaded else None

    def slow_doubled(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.005)  # a model that costs something, so that requests queue behind it
        return doubled(batch)

    batcher = DynamicBatcher(
        slow_doubled, BatchingConfig(max_batch_size=8), executor=executor, on_batch=sizes.append
    )
    inputs = [np.full(4, i, np.float32) for i in range(40)]
    try:
        results = await asyncio.gather(*(batcher.infer(x) for x in inputs))
    finally:
        if executor is not None:
            executor.shutdown()
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    assert sum(sizes) == 40
    assert max(sizes) == 8
    assert len(sizes) < 40  # batched: fewer model runs than requests


async def test_a_lone_request_waits_at_most_the_max_queue_delay() -> None:
    delay = 0.05
    batcher = DynamicBatcher(
        doubled, BatchingConfig(max_batch_size=8, max_queue_delay_s=delay), executor=None
    )
    started = time.monotonic()
    await batcher.infer(np.ones(4, np.float32))
    waited = time.monotonic() - started
    assert delay * 0.8 <= waited < delay + 1.0


async def test_a_full_batch_starts_without_waiting_for_the_delay() -> None:
    batcher = DynamicBatcher(
        doubled, BatchingConfig(max_batch_size=4, max_queue_delay_s=1.0), executor=None
    )
    started = time.monotonic()
    await asyncio.gather(*(batcher.infer(np.ones(4, np.float32)) for _ in range(4)))
    assert time.monotonic() - started < 0.5


async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    def fragile(batch: np.ndarray) -> np.ndarray:
        if (batch < 0).any():
            raise RuntimeError("the model fell over")
        return doubled(batch)

    batcher = DynamicBatcher(fragile, BatchingConfig(max_batch_size=2), executor=None)
    inputs = [np.ones(4, np.float32), -np.ones(4, np.float32)] + [np.ones(4, np.float32)] * 2
    results = await asyncio.gather(*(batcher.infer(x) for x in inputs), return_exceptions=True)
    for failed in results[:2]:
        assert isinstance(failed, ProtocolError)
        assert failed.code is ErrorCode.INFERENCE_FAILED
    for ok in results[2:]:
        assert isinstance(ok, np.ndarray)
        np.testing.assert_array_equal(ok, np.full(4, 2, np.float32))


# -- attestation admission -------------------------------------------------------------------


def test_attestation_desk_limits_each_client_and_the_hub() -> None:
    now = [0.0]
    desk: AttestationDesk[str] = AttestationDesk(
        AttestationLimits(client_rate_per_s=1, client_burst=3, hub_rate_per_s=10, hub_burst=5),
        clock=lambda: now[0],
    )
    assert [desk.admit("a") for _ in range(3)] == [0.0] * 3
    wait = desk.admit("a")
    assert 0.9 <= wait <= 1.0  # a's burst is spent: about a second until the next token
    assert desk.admit("b") == 0.0
    assert desk.admit("b") == 0.0
    assert desk.admit("c") > 0  # the hub's burst of 5 is spent, whoever asks
    now[0] = 1.0
    assert desk.admit("a") == 0.0  # refilled at the client's rate


def test_nonce_cache_expires() -> None:
    now = [0.0]
    desk: AttestationDesk[str] = AttestationDesk(
        AttestationLimits(cache_ttl_s=30), clock=lambda: now[0]
    )
    desk.cache.put(b"n", "bundle")
    assert desk.cache.get(b"n") == "bundle"
    now[0] = 31.0
    assert desk.cache.get(b"n") is None


async def test_a_request_alone_runs_at_once_and_fails_alone() -> None:
    sizes: list[int] = []
    batcher = DynamicBatcher(
        doubled, BatchingConfig(max_batch_size=8), executor=None, on_batch=sizes.append
    )
    np.testing.assert_array_equal(
        await batcher.infer(np.ones(4, np.float32), alone=True), np.full(4, 2, np.float32)
    )
    assert sizes == [1]

    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("no")

    failing = DynamicBatcher(broken, BatchingConfig(), executor=None)
    with pytest.raises(ProtocolError) as caught:
        await failing.infer(np.ones(4, np.float32), alone=True)
    assert caught.value.code is ErrorCode.INFERENCE_FAILED
