"""`escalade bench lifecycle --quick`: every section runs and reports, the bad bundles are
stopped on every simulated device with no failed request, and the CLI writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Two bundle builds, two adapter fits and two 5-round loops: ~60 s alone, more when shared.
pytestmark = pytest.mark.timeout(600)


def test_the_quick_lifecycle_bench_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "lifecycle.json"
    result = subprocess.run(
        [sys.executable, "-m", "escalade.cli", "bench", "lifecycle", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=590,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| adapter |" in result.stdout
    report = json.loads(out.read_text())
    assert report["quick"] is True
    kinds = {r["kind"]: r for r in report["adapter"]["results"]}
    assert set(kinds) == {"linear", "mlp"}
    # The MLP adapter beats the linear one from v2's nonlinear encoder (quick fit, digits).
    assert kinds["mlp"]["adapted_hub_accuracy"] > kinds["linear"]["adapted_hub_accuracy"]
    for loop in (report["loop"], report["poisoned_loop"]):
        assert [r["round"] for r in loop["rounds"]] == list(range(6))
        assert loop["rounds"][-1]["distill_samples"] > 0
    assert report["poisoned_loop"]["poisoners"] >= 1
    assert report["loop"]["poisoners"] == 0
    bad = {b["name"]: b for b in report["bad_bundles"]}
    assert set(bad) == {"corrupt file", "wrong signature", "head failing warm-up"}
    for b in bad.values():
        assert b["refused_or_rolled_back"] == b["devices"]
        assert b["requests_failed"] == 0
        assert b["requests_served"] > 0
    assert bad["corrupt file"]["codes"] == ["bundle_digest_mismatch"]
    assert bad["wrong signature"]["codes"] == ["bundle_untrusted_key"]
    assert bad["head failing warm-up"]["codes"] == ["bundle_warmup_failed"]
    targets = {t["name"]: t["met"] for t in report["targets"]}
    assert targets["bad bundles refused or rolled back everywhere, 0 requests failed"]
