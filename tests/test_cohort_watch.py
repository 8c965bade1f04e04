"""The hub's cohort sweep: real reference statistics, a fleet of honest devices drawing from
clean embeddings, one device with a small constant offset that no single message reveals."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
from hubdb import migrated_data_dir

from cloud_hub.app import build_state
from cloud_hub.audit import CohortEvidence
from cloud_hub.config import HubConfig
from cloud_hub.escalation.cohort_watch import CohortWatch, DueProfile
from cloud_hub.poisoning import EmbeddingChecker
from cloud_hub.serving import HubModel
from edge_agent.profile import load_profile
from edge_agent.runtime import EdgeRuntime


def clean_embeddings(bundle_dir: Path) -> np.ndarray:
    runtime = EdgeRuntime(bundle_dir, load_profile("x86-64-cpu"))
    with np.load(bundle_dir / "test.npz") as data:
        inputs = np.asarray(data["X"], dtype=np.float32)
    return np.stack([runtime.infer(x).embedding for x in inputs])


def test_shifted_device_is_flagged_honest_fleet_is_not(bundle_dir: Path, tmp_path: Path) -> None:
    hub = HubModel(bundle_dir)
    stats = hub.reference
    checker = EmbeddingChecker(stats)
    pool = clean_embeddings(bundle_dir)
    rng = np.random.default_rng(0)
    # The offset: small per message (each one still passes the checks)...
    direction = rng.standard_normal(stats.dim)
    offset = np.linalg.solve(stats.whitening, direction / np.linalg.norm(direction)) * 2.5
    watch = CohortWatch(stats, min_messages=100, min_devices=5)
    honest = [uuid.uuid4() for _ in range(12)]
    shifted = uuid.uuid4()
    passed = 0
    for _ in range(150):
        for device_id in honest:
            watch.observe(device_id, "x86-64-cpu", pool[rng.integers(len(pool))])
        embedding = (pool[rng.integers(len(pool))] + offset).astype(np.float32)
        label = int(np.argmax(hub.predict(embedding)))
        passed += checker.check(embedding, label).passed
        watch.observe(shifted, "x86-64-cpu", embedding)
    assert passed / 150 > 0.5  # ...most messages are individually unremarkable
    flags = watch.sweep()
    flagged = {uuid.UUID(f.flag.device_id) for f in flags}
    assert flagged == {shifted}
    assert watch.sweep() == []  # windows restart after a sweep


async def test_sweep_writes_flags_to_the_audit_log(bundle_dir: Path, tmp_path: Path) -> None:
    state = build_state(
        HubConfig(
            data_dir=migrated_data_dir(tmp_path), models_dir=bundle_dir, allow_simulated_tee=True
        )
    )
    service = state.service
    stats = service.model.reference
    pool = clean_embeddings(bundle_dir)
    odd = uuid.uuid4()
    for device_id in [uuid.uuid4() for _ in range(6)] + [odd]:
        shift = 3.0 * np.ones(stats.dim, np.float32) if device_id == odd else 0.0
        for embedding in pool[:60]:
            service.cohorts.observe(device_id, "x86-64-cpu", embedding + shift)
    try:
        assert await service.sweep_cohorts() >= 1
        events = service.store.audit_log(odd)
        assert events
        assert events[0].action.startswith("cohort_")
        assert isinstance(events[0].evidence, CohortEvidence)
        assert events[0].evidence.profile == "x86-64-cpu"
    finally:
        await service.close()
        state.quoting.shutdown()
        service.store.close()


async def test_sweeps_while_escalations_stream_never_race(bundle_dir: Path, tmp_path: Path) -> None:
    """Regression: the sweep used to iterate the windows on a worker thread while the loop
    added to them (`RuntimeError: dictionary changed size during iteration`), and the sweep
    loop then died silently. Now the loop takes the due windows; the thread gets a snapshot."""
    state = build_state(
        HubConfig(
            data_dir=migrated_data_dir(tmp_path), models_dir=bundle_dir, allow_simulated_tee=True
        )
    )
    service = state.service
    pool = clean_embeddings(bundle_dir)
    fleet = [uuid.uuid4() for _ in range(10)]
    taken: list[int] = []

    class CountingWatch(CohortWatch):
        def take_due(self) -> list[DueProfile]:
            due = super().take_due()
            taken.append(sum(len(item.means) for item in due))
            return due

    service.cohorts = CountingWatch(service.model.reference, min_messages=5, min_devices=2)

    async def stream() -> int:
        observed = 0
        for _ in range(300):
            # The fleet's windows fill and get swept; new devices keep adding keys, which is
            # what made the old thread's iteration fail.
            for device_id in [*fleet, uuid.uuid4()]:
                service.cohorts.observe(device_id, "x86-64-cpu", pool[observed % len(pool)])
                observed += 1
            await asyncio.sleep(0)
        return observed

    try:
        streaming = asyncio.create_task(stream())
        while not streaming.done():  # the stream adds between (and during) sweeps
            await service.sweep_cohorts()
            await asyncio.sleep(0)
        assert await streaming == 300 * (len(fleet) + 1)
        assert sum(taken) >= len(fleet)  # the sweeps really compared windows
    finally:
        await service.close()
        state.quoting.shutdown()
        service.store.close()


async def test_a_failing_background_job_is_logged_and_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cloud_hub.escalation.supervisor import Supervisor

    failures: list[str] = []
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"failure {runs}")
        done.set()

    supervisor = Supervisor(on_failure=failures.append)
    supervisor.every("flaky", 0.001, flaky)
    await asyncio.wait_for(done.wait(), timeout=5)
    await supervisor.stop()
    assert failures == ["flaky", "flaky"]
    assert runs >= 3
    assert "background job flaky failed" in caplog.text
