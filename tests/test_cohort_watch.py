"""The hub's cohort sweep: real reference statistics, a fleet of honest devices drawing from
clean embeddings, one device with a small constant offset that no single message reveals."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from cloud_hub.app import build_state, sweep_cohorts
from cloud_hub.cohort_watch import CohortWatch
from cloud_hub.config import HubConfig
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


def test_sweep_writes_flags_to_the_audit_log(bundle_dir: Path, tmp_path: Path) -> None:
    state = build_state(
        HubConfig(data_dir=tmp_path, models_dir=bundle_dir, allow_simulated_tee=True)
    )
    stats = state.model.reference
    pool = clean_embeddings(bundle_dir)
    odd = uuid.uuid4()
    for device_id in [uuid.uuid4() for _ in range(6)] + [odd]:
        shift = 3.0 * np.ones(stats.dim, np.float32) if device_id == odd else 0.0
        for embedding in pool[:60]:
            state.cohorts.observe(device_id, "x86-64-cpu", embedding + shift)
    try:
        assert sweep_cohorts(state) >= 1
        events = state.store.audit_log(odd)
        assert events
        assert events[0].action.startswith("cohort_")
        assert events[0].evidence["profile"] == "x86-64-cpu"
    finally:
        state.recorder.close()
        state.executor.shutdown()
        state.store.close()
