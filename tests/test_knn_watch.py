"""The k-NN audit on a sample of live traffic: a real bundle, its clean bank, off the request
path."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import numpy as np
from hubdb import migrated_data_dir

from cloud_hub.app import build_state
from cloud_hub.audit import KnnEvidence
from cloud_hub.config import HubConfig
from cloud_hub.escalation.knn_watch import KnnWatch, bundle_knn_auditor
from cloud_hub.serving import HubModel
from edge_agent.profile import load_profile
from edge_agent.runtime import EdgeRuntime


def _test_embeddings(bundle_dir: Path) -> np.ndarray:
    runtime = EdgeRuntime(bundle_dir, load_profile("x86-64-cpu"))
    with np.load(bundle_dir / "test.npz") as data:
        inputs = np.asarray(data["X"], dtype=np.float32)
    return np.stack([runtime.infer(x).embedding for x in inputs])


def _off_manifold(clean: np.ndarray) -> np.ndarray:
    """Random directions at each clean embedding's own norm: the vectors that pass the norm
    band by construction and that the Mahalanobis tiers catch at only 0.87."""
    g = np.random.default_rng(0).standard_normal(clean.shape)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return (g * np.linalg.norm(clean, axis=1, keepdims=True)).astype(np.float32)


def test_the_sample_flags_off_manifold_embeddings_not_clean_ones(bundle_dir: Path) -> None:
    auditor = bundle_knn_auditor(bundle_dir, HubModel(bundle_dir).reference)
    assert auditor is not None
    clean = _test_embeddings(bundle_dir)
    watch = KnnWatch(auditor, rate=1.0)
    honest, forger = uuid.uuid4(), uuid.uuid4()
    for embedding, forged in zip(clean, _off_manifold(clean), strict=True):
        watch.observe(honest, embedding)
        watch.observe(forger, forged)
    flags = watch.check(watch.take())
    by_device = {d: sum(f.device_id == d for f in flags) for d in (honest, forger)}
    assert by_device[forger] / len(clean) > 0.9, by_device
    assert by_device[honest] / len(clean) < 0.1, by_device
    assert watch.take() == []


def test_sampling_is_bounded_and_at_its_rate(bundle_dir: Path) -> None:
    auditor = bundle_knn_auditor(bundle_dir, HubModel(bundle_dir).reference)
    assert auditor is not None
    watch = KnnWatch(auditor, rate=0.1, max_pending=50, rng=random.Random(0))
    embedding = np.zeros(auditor._w.shape[1], np.float32)
    for _ in range(300):
        watch.observe(uuid.uuid4(), embedding)
    assert 15 <= len(watch.take()) <= 45
    for _ in range(5000):
        watch.observe(uuid.uuid4(), embedding)
    assert len(watch.take()) == 50


async def test_flags_reach_the_audit_log_with_typed_evidence(
    bundle_dir: Path, tmp_path: Path
) -> None:
    state = build_state(
        HubConfig(
            data_dir=migrated_data_dir(tmp_path), models_dir=bundle_dir, allow_simulated_tee=True
        )
    )
    service = state.service
    assert service.knn is not None
    service.knn.rate = 1.0
    odd = uuid.uuid4()
    for forged in _off_manifold(_test_embeddings(bundle_dir)[:40]):
        service.knn.observe(odd, forged)
    try:
        assert await service.audit_knn() >= 30
        events = service.store.audit_log(odd)
        assert events
        assert {e.action for e in events} == {"knn_outlier"}
        assert isinstance(events[0].evidence, KnnEvidence)
        assert events[0].evidence.distance > events[0].evidence.threshold
    finally:
        await service.close()
