"""What a new user is told about the demo's model bundle and figures: which bundle is used, what
to do with a damaged one, why escalations are the size they are, a hub model worse than the
edge's; and that running the parts in a checkout leaves no keys for git to pick up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from escalade.bundle_notes import bytes_note, check_bundle, hub_accuracy_warning
from escalade_protocol.artifacts import BundleError, BundleMetrics, load_manifest

ROOT = Path(__file__).resolve().parents[1]


def _demo(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "escalade.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(cache), "COLUMNS": "200"},
    )


def _cached(bundle_dir: Path, cache: Path) -> Path:
    target = cache / "escalade" / "models" / "digits"
    shutil.copytree(bundle_dir, target)
    return target


def test_a_damaged_cached_bundle_says_what_to_do(bundle_dir: Path, tmp_path: Path) -> None:
    cached = _cached(bundle_dir, tmp_path)
    manifest = load_manifest(cached)
    with (cached / manifest.hub.path).open("ab") as f:
        f.write(b"\0")
    result = _demo("--limit", "1", cache=tmp_path)
    assert result.returncode == 2, result
    text = " ".join((result.stdout + result.stderr).split())
    assert f"the model bundle in {cached} is damaged" in text
    assert "digest mismatch" in text
    assert "escalade demo --rebuild" in text
    assert "Traceback" not in result.stdout + result.stderr
    with pytest.raises(BundleError, match="digest mismatch"):
        check_bundle(cached)


def test_rebuild_is_only_for_the_cache(bundle_dir: Path, tmp_path: Path) -> None:
    result = _demo("--models", str(bundle_dir), "--rebuild", cache=tmp_path)
    assert result.returncode == 2
    assert "escalade models build --out" in " ".join((result.stdout + result.stderr).split())


def test_the_demo_names_the_cached_bundle_and_explains_the_bytes(
    bundle_dir: Path, tmp_path: Path
) -> None:
    cached = _cached(bundle_dir, tmp_path)
    out = tmp_path / "demo.json"
    result = _demo("--limit", "2", "--json", str(out), cache=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join((result.stdout + result.stderr).split())
    manifest = load_manifest(cached)
    assert f"using the model bundle in {cached}: {manifest.model_id} v1" in text
    assert "(the cache; --rebuild to rebuild)" in text
    note = json.loads(out.read_text())["bytes"]["note"]
    assert note == bytes_note(manifest)
    assert f"bytes per escalation vs raw upload: {note}" in text


def test_the_bytes_note_compares_embedding_and_input(bundle_dir: Path) -> None:
    digits = load_manifest(bundle_dir)
    assert (digits.input_dim, digits.embedding_dim, digits.wire_dtype) == (64, 32, "float16")
    assert bytes_note(digits).startswith("same size: the embedding (32 float16 values, 64 B)")
    fashion = digits.model_copy(update={"input_dim": 784})
    assert bytes_note(fashion).startswith("12.2x smaller")


def test_a_hub_worse_than_the_edge_is_warned_about() -> None:
    worse = BundleMetrics(
        edge_accuracy=0.8889, hub_accuracy=0.7222, cascade_accuracy=0.8, escalation_rate=0.2
    )
    warning = hub_accuracy_warning(worse)
    assert warning is not None
    assert "72.22%" in warning
    assert "88.89%" in warning
    better = worse.model_copy(update={"hub_accuracy": 0.95})
    assert hub_accuracy_warning(better) is None


def test_the_parts_state_in_a_checkout_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["agent-data/device.key", "hub-data/hub.db", "admin-token", "enroll-token"]
    result = subprocess.run(
        ["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.stdout.split() == paths


def test_the_readme_says_how_to_run_the_parts() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running the parts yourself", 1)[1].split("\n## ", 1)[0]
    for needed in ("python3 -m venv .venv", ". .venv/bin/activate", "Terminal 1", "Terminal 3"):
        assert needed in section
    assert "device.key" in section
    assert ".gitignore" in section
