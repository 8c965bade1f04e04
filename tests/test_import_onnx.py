"""`escalade models import`: scikit-learn models exported with skl2onnx become a bundle that the
agent and the hub load, is signed and verifies; bad files are refused with stable codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from cloud_hub.serving import HubModel
from edge_agent.profile import load_profile
from edge_agent.runtime import EdgeRuntime
from escalade.modelbuild.import_onnx import ImportRefused, import_bundle
from escalade_protocol.bundles import inspect_bundle, parse_release_keys
from escalade_protocol.errors import ErrorCode


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The docs/models.md worked example: PCA encoder, logistic head, MLP hub, via skl2onnx."""
    out = tmp_path_factory.mktemp("sklearn")
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    train, cal = slice(0, 1200), slice(1200, None)
    pca = PCA(n_components=16, random_state=0).fit(x[train])
    e = pca.transform(x[train]).astype(np.float32)
    head = LogisticRegression(max_iter=2000).fit(e, y[train])
    hub = MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=0).fit(e, y[train])
    no_zipmap = {"zipmap": False}
    files = {
        "encoder": to_onnx(pca, x[:1], target_opset=17),
        "head": to_onnx(head, e[:1], options=no_zipmap, target_opset=17),
        "hub": to_onnx(hub, e[:1], options=no_zipmap, target_opset=17),
    }
    paths = {}
    for name, model in files.items():
        paths[name] = out / f"{name}.onnx"
        paths[name].write_bytes(model.SerializeToString())
    paths["calibration"] = out / "digits-cal.npz"
    np.savez(paths["calibration"], X=x[cal], y=y[cal])
    return paths


def test_sklearn_models_import_as_a_bundle_agent_and_hub_load(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    manifest = import_bundle(
        exported["encoder"],
        exported["head"],
        exported["hub"],
        exported["calibration"],
        out,
        model_id="digits-sklearn",
    )
    assert (manifest.input_dim, manifest.embedding_dim, manifest.num_classes) == (64, 16, 10)
    assert manifest.metrics.hub_accuracy > 0.85
    assert manifest.metrics.cascade_accuracy >= manifest.metrics.edge_accuracy - 0.01
    assert 0 < manifest.router.threshold < 1
    runtime = EdgeRuntime(out, load_profile("x86-64-cpu"), data_dir=tmp_path)
    with np.load(exported["calibration"]) as data:
        x = data["X"].astype(np.float32)
    result = runtime.infer(x[0])
    assert result.embedding.shape == (16,)
    assert abs(float(result.probabilities.sum()) - 1) < 1e-4
    hub = HubModel(out)
    assert hub.predict(result.embedding).shape == (10,)


def test_the_import_cli_signs_and_the_bundle_verifies(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    out, key = tmp_path / "bundle", tmp_path / "release.key"
    argv = [sys.executable, "-m", "escalade.cli", "models", "import", "--json"]
    for role in ("encoder", "head", "hub", "calibration"):
        argv += [f"--{role}", str(exported[role])]
    result = subprocess.run(
        [*argv, "--out", str(out), "--sign-key", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model_id"] == "digits-cal-import"
    verdict = inspect_bundle(out, release_keys=parse_release_keys([str(key) + ".pub"]))
    assert verdict.trusted
    assert verdict.digest == report["signed_digest"]


def test_mismatched_widths_and_bad_files_are_refused_with_stable_codes(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    bad_labels = tmp_path / "bad.npz"
    np.savez(bad_labels, X=np.zeros((50, 64), np.float32), y=np.full(50, 12))
    cases = [
        # The hub where the encoder should be: it takes 16 inputs and gives 10 probabilities.
        ((exported["hub"], exported["head"], exported["hub"], exported["calibration"]),
         ErrorCode.IMPORT_SHAPE_MISMATCH),
        ((garbage, exported["head"], exported["hub"], exported["calibration"]),
         ErrorCode.IMPORT_BAD_ONNX),
        ((exported["encoder"], exported["head"], exported["hub"], bad_labels),
         ErrorCode.IMPORT_BAD_CALIBRATION),
    ]  # fmt: skip
    for (encoder, head, hub, calibration), code in cases:
        with pytest.raises(ImportRefused) as refused:
            import_bundle(encoder, head, hub, calibration, tmp_path / "out")
        assert refused.value.code is code, refused.value.message
        assert "\n" not in refused.value.message
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_cli_reports_a_refusal_in_one_line_and_exits_2(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "escalade.cli", "models", "import"),
            *("--encoder", str(exported["head"]), "--head", str(exported["head"])),
            *("--hub", str(exported["hub"]), "--calibration", str(exported["calibration"])),
            *("--out", str(tmp_path / "o")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1
    assert "import_shape_mismatch" in lines[0]
