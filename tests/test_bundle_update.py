"""The agent's bundle updates: the pure core's transitions, the probation guard with real ONNX
Runtime sessions, the resumable fetcher against a real hub's bundle routes, and the version-2
device report and ack."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from rollout_bundles import nudged_head, signed_copy, wide_head

from cloud_hub.rollouts.routes import add_bundle_routes
from cloud_hub.rollouts.shelf import BundleShelf
from edge_agent.bundle_update import core
from edge_agent.bundle_update.fetch import BundleFetcher
from edge_agent.bundle_update.guard import ProbationModel
from edge_agent.bundle_update.health import check_results, load_checked
from edge_agent.profile import load_profile
from edge_agent.runtime import EdgeRuntime
from escalade_protocol.bundles import BundleRefused, bundle_digest
from escalade_protocol.device_reports import (
    ASSIGNMENT_VERSION,
    BundleState,
    DeviceReport,
    ModelStatus,
    ReportAck,
    read_report,
    verify_ack,
)
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import error_middleware
from escalade_protocol.keys import Ed25519PrivateKey

KEY = Ed25519PrivateKey.generate()
A, B, C = "a" * 64, "b" * 64, "c" * 64
PROFILE = load_profile("x86-64-cpu")


def digest_of(bundle: Path) -> str:
    return bundle_digest((bundle / "manifest.json").read_bytes())


# -- the pure core ----------------------------------------------------------------------------


def test_a_new_assignment_is_fetched_once_then_current() -> None:
    """Assigned B: fetch it (and nothing while loading); swapped with probation 2: pending until
    two good answers, then current."""
    s = core.assigned(core.initial(A), B)
    assert core.plan(s) == core.Fetch(B)
    s = core.loading(s)
    assert core.plan(s) == core.Keep()
    assert s.status is BundleState.PENDING
    s = core.swapped(s, B, probation=2)
    s, rollback = core.answered(s, ok=True)
    assert not rollback
    assert s.status is BundleState.PENDING
    s, _ = core.answered(s, ok=True)
    assert s.status is BundleState.CURRENT
    assert core.plan(s) == core.Keep()


def test_a_failed_answer_rolls_back_and_is_not_retried() -> None:
    """One bad answer in probation: roll back to the previous bundle, which the device then
    reports rolled_back for B, and B is not fetched again."""
    s = core.swapped(core.loading(core.assigned(core.initial(A), B)), B, probation=5)
    s, rollback = core.answered(s, ok=False)
    assert rollback
    s = core.rolled_back(s, "bundle_warmup_failed", "nan")
    assert (s.running, s.status) == (A, BundleState.ROLLED_BACK)
    assert core.plan(s) == core.Keep()


def test_a_refused_bundle_keeps_the_running_one() -> None:
    """Refused C while running B: still B, reported refused, C not fetched again; a later
    assignment of B again is current."""
    s = core.swapped(core.assigned(core.initial(A), B), B, probation=0)
    s = core.refused(core.loading(core.assigned(s, C)), C, "bundle_digest_mismatch", "x")
    assert (s.running, s.status, core.plan(s)) == (B, BundleState.REFUSED, core.Keep())
    assert core.assigned(s, B).status is BundleState.CURRENT


def test_unassigned_reverts_to_the_installed_bundle() -> None:
    s = core.swapped(core.assigned(core.initial(A), B), B, probation=0)
    assert core.plan(core.assigned(s, None)) == core.Revert()


def test_an_interrupted_download_is_tried_again() -> None:
    s = core.interrupted(core.loading(core.assigned(core.initial(A), B)))
    assert core.plan(s) == core.Fetch(B)


# -- health checks and the probation guard, with real sessions --------------------------------


def test_warm_up_refuses_a_wide_head(bundle_dir: Path, tmp_path: Path) -> None:
    bad = wide_head(bundle_dir, tmp_path / "wide", KEY)
    running = EdgeRuntime(bundle_dir, PROFILE).manifest
    with pytest.raises(BundleRefused) as caught:
        load_checked(bad, PROFILE, data_dir=tmp_path, running=running)
    assert caught.value.code is ErrorCode.BUNDLE_WARMUP_FAILED


def test_probation_answers_from_the_previous_bundle_when_the_new_one_fails(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """A new runtime whose answers fail the checks: the batch is answered by the previous
    runtime (same results as calling it), and the failure is reported once."""
    previous = EdgeRuntime(bundle_dir, PROFILE)
    broken = EdgeRuntime(wide_head(bundle_dir, tmp_path / "wide", KEY), PROFILE)
    seen: list[tuple[int, str | None]] = []
    guard = ProbationModel(broken, previous, lambda n, p: seen.append((n, p)))
    with np.load(bundle_dir / "test.npz") as data:
        batch = np.asarray(data["X"][:4], dtype=np.float32)
    answers = guard.infer_batch(batch)
    expected = previous.infer_batch(batch)
    assert [a.probabilities.tolist() for a in answers] == [
        e.probabilities.tolist() for e in expected
    ]
    assert len(seen) == 1
    assert seen[0][0] == 0
    assert "head output shape" in (seen[0][1] or "")


def test_probation_passes_good_answers_through(bundle_dir: Path, tmp_path: Path) -> None:
    previous = EdgeRuntime(bundle_dir, PROFILE)
    new = EdgeRuntime(nudged_head(bundle_dir, tmp_path / "v2", KEY, scale=1.05), PROFILE)
    seen: list[tuple[int, str | None]] = []
    guard = ProbationModel(new, previous, lambda n, p: seen.append((n, p)))
    with np.load(bundle_dir / "test.npz") as data:
        batch = np.asarray(data["X"][:3], dtype=np.float32)
    answers = guard.infer_batch(batch)
    assert check_results(answers, new.manifest) is None
    assert [a.probabilities.tolist() for a in answers] == [
        r.probabilities.tolist() for r in new.infer_batch(batch)
    ]
    assert seen == [(3, None)]


# -- the fetcher against the hub's bundle routes -------------------------------------------------


@pytest.fixture(name="hub_shelf")
async def hub_shelf_fixture(tmp_path: Path) -> AsyncIterator[tuple[str, BundleShelf]]:
    shelf = BundleShelf(tmp_path / "shelf", [KEY.public_key()])
    app = web.Application(middlewares=[error_middleware])
    add_bundle_routes(app, shelf)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", shelf
    finally:
        await runner.cleanup()


def _shelve(shelf: BundleShelf, bundle: Path) -> str:
    import shutil

    digest = digest_of(bundle)
    shutil.copytree(bundle, shelf.root / digest)
    return digest


async def test_fetch_resumes_with_range_and_checks_everything(
    hub_shelf: tuple[str, BundleShelf], bundle_dir: Path, tmp_path: Path
) -> None:
    """Half of hub.onnx already there as .part: only the rest is downloaded (206), and the
    bundle lands whole, byte for byte, in its digest's directory."""
    url, shelf = hub_shelf
    signed = signed_copy(bundle_dir, tmp_path / "signed", KEY)
    digest = _shelve(shelf, signed)
    root = tmp_path / "agent-bundles"
    partial = root / f"{digest}.partial"
    partial.mkdir(parents=True)
    whole = (signed / "hub.onnx").read_bytes()
    (partial / "hub.onnx.part").write_bytes(whole[: len(whole) // 2])
    async with aiohttp.ClientSession() as http:
        fetched = await BundleFetcher(http, root, [KEY.public_key()]).fetch(url, digest)
    assert fetched.resumed == 1
    total = sum(p.stat().st_size for p in signed.iterdir() if p.suffix in (".onnx", ".npz"))
    assert fetched.received == total - len(whole) // 2
    for p in signed.iterdir():
        assert (
            hashlib.sha256((fetched.path / p.name).read_bytes()).digest()
            == hashlib.sha256(p.read_bytes()).digest()
        )
    assert not partial.exists()


@pytest.mark.parametrize("damage", ["corrupt", "unsigned", "other_key", "renamed"])
async def test_fetch_refuses_and_keeps_nothing(
    hub_shelf: tuple[str, BundleShelf], bundle_dir: Path, tmp_path: Path, damage: str
) -> None:
    url, shelf = hub_shelf
    signed = signed_copy(bundle_dir, tmp_path / "signed", KEY)
    expected = {
        "corrupt": ErrorCode.BUNDLE_DIGEST_MISMATCH,
        "unsigned": ErrorCode.BUNDLE_UNSIGNED,
        "other_key": ErrorCode.BUNDLE_UNTRUSTED_KEY,
        "renamed": ErrorCode.BUNDLE_DIGEST_MISMATCH,
    }[damage]
    digest = _shelve(shelf, signed)
    served = shelf.root / digest
    if damage == "corrupt":
        data = bytearray((served / "head.onnx").read_bytes())
        data[7] ^= 0x40
        (served / "head.onnx").write_bytes(bytes(data))
    elif damage == "unsigned":
        (served / "manifest.sig").unlink()
    elif damage == "other_key":
        from escalade_protocol.bundles import sign_bundle

        sign_bundle(served, Ed25519PrivateKey.generate())
    ask = digest if damage != "renamed" else "e" * 64
    if damage == "renamed":
        served.rename(shelf.root / ask)
    root = tmp_path / "agent-bundles"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(BundleRefused) as caught:
            await BundleFetcher(http, root, [KEY.public_key()]).fetch(url, ask)
    assert caught.value.code is expected
    assert not (root / ask).exists()


# -- the version-2 report and ack ---------------------------------------------------------------


def _status() -> ModelStatus:
    return ModelStatus(
        record_id=uuid.uuid4(),
        at_ms=1,
        model_id="m",
        model_version=3,
        bundle_digest=bytes.fromhex(A),
        state=BundleState.ROLLED_BACK,
        target_digest=bytes.fromhex(B),
        code="bundle_warmup_failed",
        detail="nan",
    )


def test_model_status_round_trips_in_a_v2_report() -> None:
    device = Ed25519PrivateKey.generate()
    status = _status()
    raw = DeviceReport(
        uuid.uuid4(), 5, os.urandom(16), bytes(16), (status,), version=ASSIGNMENT_VERSION
    ).sign(device)
    assert read_report(raw).verify(device.public_key()).items == (status,)


def test_model_status_needs_version_2() -> None:
    raw = DeviceReport(uuid.uuid4(), 5, os.urandom(16), bytes(16), (_status(),)).sign(KEY)
    with pytest.raises(ProtocolError) as caught:
        read_report(raw)
    assert caught.value.code is ErrorCode.MALFORMED


@pytest.mark.parametrize("assigned", [None, bytes.fromhex(C)])
def test_v2_ack_carries_the_assignment(assigned: bytes | None) -> None:
    report = b"any report bytes"
    digest = hashlib.sha256(report).digest()
    ack = ReportAck(bytes(16), digest, (), version=ASSIGNMENT_VERSION, assigned=assigned)
    read = verify_ack(ack.sign(KEY), KEY.public_key(), report=report)
    assert (read.version, read.assigned) == (ASSIGNMENT_VERSION, assigned)


def test_v1_ack_cannot_carry_an_assignment() -> None:
    with pytest.raises(ValueError, match="version 1"):
        ReportAck(bytes(16), bytes(32), (), assigned=bytes(32)).sign(KEY)
