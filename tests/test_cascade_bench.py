"""The cascade benchmark on digits, one seed: structure and sanity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from escalade.cascade_bench import curves, markdown, plot_curves, run_cascade_bench
from escalade.cascade_bench.report import CascadeReport
from escalade.modelbuild.learned_router import (
    fit_learned_router,
    learned_router_model,
    serialize,
)


@pytest.fixture(scope="module")
def report() -> CascadeReport:
    return run_cascade_bench("digits", seeds=(0,), quick=True, resamples=50)


def test_report_is_sane(report: CascadeReport, tmp_path: Path) -> None:
    by_name = {p.name: p for p in report.policies}
    assert set(by_name) >= {"random", "max_probability", "learned", "online", "oracle"}
    oracle = by_name["oracle"].accuracy.mean
    for p in report.policies:
        assert p.accuracy.mean <= oracle + 1e-12, p.name
        assert p.accuracy.low <= p.accuracy.mean <= p.accuracy.high
        if p.apgr is not None:
            assert 0.0 <= p.apgr.mean <= 1.0
            assert p.cpt50 is not None
            assert p.cpt95 is not None
            assert p.cpt50.mean <= p.cpt95.mean
    assert by_name["edge_only"].escalation_rate.mean == 0.0
    assert by_name["hub_only"].escalation_rate.mean == 1.0
    assert by_name["max_probability"].apgr.mean > by_name["random"].apgr.mean  # type: ignore[union-attr]
    assert report.wire.embedding_envelope_bytes > 0
    assert len(report.targets) == 5
    assert "| oracle |" in markdown(report)
    png = plot_curves(report, tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    CascadeReport.model_validate_json(report.model_dump_json())


def test_curve_metrics_on_a_known_case() -> None:
    # Edge wrong exactly on the two least confident of ten; hub always right.
    scores = np.arange(10.0)
    edge = scores >= 2
    hub = np.ones(10, bool)
    rates, acc = curves.curve(curves.Sorted.of(scores, edge, hub))
    assert acc[0] == pytest.approx(0.8)
    assert acc[-1] == pytest.approx(1.0)
    assert curves.cpt(rates, acc, 0.5) == pytest.approx(0.1)
    assert curves.apgr(rates, acc) == pytest.approx(1 - 0.1)  # only the ramp over 0..0.2 is lost


def test_learned_router_graph_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 5)) * 3
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities = p.astype(np.float32)
    embedding = rng.normal(size=(200, 8)).astype(np.float32)
    router = fit_learned_router(probabilities, embedding, probabilities.max(axis=1) > 0.6)
    model = learned_router_model(router, 5, 8)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(serialize(model), providers=["CPUExecutionProvider"])
    got = session.run(None, {"embedding": embedding, "probabilities": probabilities})[0][:, 0]
    np.testing.assert_allclose(got, router.predict(probabilities, embedding), atol=1e-4)
