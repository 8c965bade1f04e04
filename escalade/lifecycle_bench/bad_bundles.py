"""Bad bundles against every simulated device, through part A's own code: the bundle checks
(`inspect_bundle`), the agent's load and warm-up (`load_checked`) and its update state machine
(`edge_agent.bundle_update.core`). Each device keeps serving from its running bundle meanwhile;
a request fails when its answer fails the agent's health check (`check_results`) or raises."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge_agent.bundle_update import core
from edge_agent.bundle_update.health import check_results, load_checked
from edge_agent.profile import load_profile
from edge_agent.runtime import EdgeRuntime
from escalade.lifecycle_bench.report import BadBundle
from escalade_protocol.artifacts import MANIFEST_NAME, load_manifest, sha256_file
from escalade_protocol.bundles import (
    BundleRefused,
    bundle_digest,
    inspect_bundle,
    sign_bundle,
)
from escalade_protocol.device_reports import BundleState
from escalade_protocol.keys import Ed25519PrivateKey


def _new_release(bundle: Path) -> None:
    """A different bundle (another digest) to break: the router's threshold nudged."""
    manifest = load_manifest(bundle)
    router = manifest.router.model_copy(update={"threshold": manifest.router.threshold * 0.999})
    (bundle / MANIFEST_NAME).write_text(
        manifest.model_copy(update={"router": router}).model_dump_json(indent=2)
    )


def _corrupt(bundle: Path, key: Ed25519PrivateKey) -> None:
    """Signed, then one byte of the head flipped (a damaged download or a tampered mirror)."""
    sign_bundle(bundle, key)
    head = bundle / load_manifest(bundle).head.path
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))


def _wrong_signature(bundle: Path, key: Ed25519PrivateKey) -> None:
    """Intact files, signed by a key no device pins."""
    sign_bundle(bundle, Ed25519PrivateKey.generate())


def _nan_head(bundle: Path, key: Ed25519PrivateKey) -> None:
    """Signed by the release key, but its head answers NaN: it must fail warm-up."""
    manifest = load_manifest(bundle)
    path = bundle / manifest.head.path
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(np.full_like(values, np.nan), init.name))
    onnx.save(model, str(path))
    head = manifest.head.model_copy(update={"sha256": sha256_file(path)})
    (bundle / MANIFEST_NAME).write_text(
        manifest.model_copy(update={"head": head}).model_dump_json(indent=2)
    )
    sign_bundle(bundle, key)


VARIANTS: dict[str, Callable[[Path, Ed25519PrivateKey], None]] = {
    "corrupt file": _corrupt,
    "wrong signature": _wrong_signature,
    "head failing warm-up": _nan_head,
}


def run_bad_bundles(
    base: Path, key: Ed25519PrivateKey, *, devices: int, requests: int, inputs: np.ndarray
) -> list[BadBundle]:
    profile = load_profile("x86-64-cpu")
    pinned = [key.public_key()]
    base_digest = bundle_digest((base / MANIFEST_NAME).read_bytes())
    results: list[BadBundle] = []
    with tempfile.TemporaryDirectory(prefix="escalade-bad-") as tmp:
        running = EdgeRuntime(base, profile, data_dir=Path(tmp))
        for name, make in VARIANTS.items():
            bad = Path(tmp) / name.replace(" ", "-")
            shutil.copytree(base, bad)
            (bad / "manifest.sig").unlink(missing_ok=True)
            _new_release(bad)
            make(bad, key)
            digest = bundle_digest((bad / MANIFEST_NAME).read_bytes())
            stopped, served, failed, codes = 0, 0, 0, set()
            for device in range(devices):
                state = core.assigned(core.initial(base_digest), digest)
                assert core.plan(state) == core.Fetch(digest)
                state = core.loading(state)
                verdict = inspect_bundle(bad, release_keys=pinned, expected_digest=digest)
                if verdict.failures:
                    code = verdict.failures[0].code.value
                    state = core.refused(state, digest, code, verdict.summary())
                else:
                    try:
                        load_checked(bad, profile, data_dir=Path(tmp), running=running.manifest)
                        state = core.swapped(state, digest, probation=requests)
                    except BundleRefused as exc:
                        state = core.refused(
                            state,
                            digest,
                            exc.code.value,
                            exc.message,
                            outcome=BundleState.ROLLED_BACK,
                        )
                codes.add(state.code)
                stopped += state.running == base_digest and digest in state.failed
                # The device's traffic meanwhile, on whatever it runs now.
                batch = inputs[(device * requests + np.arange(requests)) % len(inputs)]
                try:
                    answers = running.infer_batch(batch) if state.running == base_digest else []
                    failed += len(batch) - len(answers)
                    failed += len(batch) * (check_results(answers, running.manifest) is not None)
                except Exception:  # any failure here is what the figure counts
                    failed += len(batch)
                served += len(batch)
            results.append(
                BadBundle(
                    name=name,
                    devices=devices,
                    refused_or_rolled_back=stopped,
                    requests_served=served,
                    requests_failed=failed,
                    codes=sorted(codes),
                )
            )
    return results
