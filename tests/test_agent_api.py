"""The agent's local API as applications see it: a real hub and agent over loopback, a KServe v2
client from PyPI (tritonclient), the security checks, domain and band checks, metrics, and the
outcome records reaching the hub."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import numpy as np
import onnxruntime as ort
import pytest
from agent_stack import agent_argv, enrolled, free_port, health, ids, infer, until, write_config

from cloud_hub.device_reports import count_outcomes
from cloud_hub.store import Store, sqlite_url
from edge_agent.identity import DeviceIdentity
from edge_agent.profile import load_profile
from edge_agent.runtime import EdgeRuntime
from escalade.procs import service
from escalade_protocol.artifacts import load_manifest, verified_path
from escalade_protocol.messages import ErrorBody

TOKEN = "t" * 40
APP = "http://app.local"


async def error_code(response: aiohttp.ClientResponse) -> str:
    return ErrorBody.model_validate_json(await response.read()).code.value


def kserve_calls(url: str, model: str, rows: np.ndarray) -> dict[str, object]:
    """What a stock Triton / KServe v2 client sees (blocking; run in a thread)."""
    import tritonclient.http as triton

    headers = {"Authorization": f"Bearer {TOKEN}"}
    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata(model, headers=dict(headers))
        results = {}
        for binary in (True, False):
            tensor = triton.InferInput("input", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=binary)
            outputs = [
                triton.InferRequestedOutput(name, binary_data=binary)
                for name in ("label", "probabilities", "reason", "out_of_domain")
            ]
            # A fresh dict: tritonclient writes Inference-Header-Content-Length into it.
            result = client.infer(model, [tensor], outputs=outputs, headers=dict(headers))
            results[binary] = {
                name: result.as_numpy(name)
                for name in ("label", "probabilities", "reason", "out_of_domain")
            }
        return {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(model, headers=dict(headers)),
            "metadata": metadata,
            "results": results,
        }
    finally:
        client.close()


async def test_local_api_v1_v2_security_domain_and_records(
    bundle_dir: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        X = np.asarray(data["X"][:40], dtype=np.float32)
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = write_config(
        tmp_path / "agent.toml",
        data_dir=tmp_path / "agent",
        bundle_dir=bundle_dir,
        extra=f'api_token_file = "{token_file}"\nallowed_origins = ["{APP}"]\n',
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        enrolled(tmp_path, bundle_dir, free_port()),
        service("agent", agent_argv(config), log_dir=tmp_path) as agent,
        aiohttp.ClientSession() as http,
        aiohttp.ClientSession(headers=auth) as app,
    ):
        url = agent.url
        async with http.get(url + "/v2/health/ready") as resp:
            ready = await resp.json()
            assert resp.status == 200
            assert ready == {"ready": True, "degraded": False, "reasons": []}

        # Security: token, content type, origin.
        async with http.post(url + "/v1/infer", json={"input": [0.0] * 64}) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert await error_code(resp) == "unauthorized"
        wrong = {"Authorization": "Bearer " + "x" * 40}
        async with http.post(url + "/v1/infer", json={"input": [0.0]}, headers=wrong) as resp:
            assert resp.status == 401
        plain = {"Content-Type": "text/plain"}
        body = json.dumps({"input": [float(v) for v in X[0]]})
        evil = {**plain, "Origin": "http://evil.example"}
        async with app.post(url + "/v1/infer", data=body, headers=evil) as resp:
            assert resp.status == 403
            assert await error_code(resp) == "forbidden_origin"
        async with app.post(url + "/v1/infer", data=body, headers=plain) as resp:
            assert resp.status == 415
            assert await error_code(resp) == "unsupported_media_type"
        headers = {"Content-Type": "application/json", "Origin": APP}
        async with app.post(url + "/v1/infer", data=body, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == APP

        # Errors with their own codes.
        async with app.get(url + "/v1/nowhere") as resp:
            assert (resp.status, await error_code(resp)) == (404, "not_found")
        async with app.get(url + "/v1/infer") as resp:
            assert (resp.status, await error_code(resp)) == (405, "method_not_allowed")
            assert resp.headers["Allow"] == "POST"
        for bad in (["1"] * 64, [True] * 64):
            async with app.post(url + "/v1/infer", json={"input": bad}) as resp:
                assert (resp.status, await error_code(resp)) == (400, "bad_request")

        # Answers say where they came from and why; absurd inputs are flagged, never confident.
        answers = [await infer(app, url, [float(v) for v in x]) for x in X]
        assert {a.path for a in answers} <= {"local", "escalated"}
        assert any(a.path == "escalated" for a in answers)
        absurd = [float(v) for v in X[0]]
        absurd[10] = 1e30
        flagged = await infer(app, url, absurd, route="hub")
        assert flagged.out_of_domain
        assert (flagged.path, flagged.reason, flagged.source) == ("local", "out_of_domain", "local")
        answers.append(flagged)

        # An embedding the hub would refuse stays local: applications cannot spend the
        # device's reputation (30 of these once got a device quarantined).
        saturated = [16.0] * 64
        for _ in range(30):
            kept = await infer(app, url, saturated, route="hub")
            assert (kept.path, kept.reason) == ("degraded", "embedding_out_of_band")
            answers.append(kept)
        genuine = await infer(app, url, [float(v) for v in X[1]], route="hub")
        assert (genuine.path, genuine.reason) == ("escalated", "forced_hub")
        answers.append(genuine)

        # A stock KServe v2 client, binary and JSON tensors.
        rows = X[:4]
        seen = await asyncio.to_thread(kserve_calls, url, manifest.model_id, rows)
        assert seen["live"]
        assert seen["ready"]
        assert seen["model_ready"]
        metadata = seen["metadata"]
        assert isinstance(metadata, dict)
        assert metadata["inputs"][0]["shape"] == [-1, manifest.input_dim]
        results = seen["results"]
        assert isinstance(results, dict)
        for binary in (True, False):
            got = results[binary]
            assert got["label"].shape == (4,)
            assert got["probabilities"].shape == (4, manifest.num_classes)
            assert np.allclose(got["probabilities"].sum(axis=1), 1.0, atol=1e-4)
            reasons = {r.decode() if isinstance(r, bytes) else str(r) for r in got["reason"]}
            assert reasons <= {"confident", "uncertain", "explore"}
            assert not got["out_of_domain"].any()

        # v2 errors as KServe clients read them, the stable code beside; a forced route.
        v2_url = f"{url}/v2/models/{manifest.model_id}/infer"
        bad = {
            "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
        }
        async with app.post(v2_url, json=bad) as resp:
            assert resp.status == 422
            assert (await resp.json())["code"] == "bad_tensor_shape"
            assert "error" in await resp.json()
        forced = {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": [float(v) for v in X[2]],
                }
            ],
            "parameters": {"route": "hub"},
        }
        async with app.post(v2_url, json=forced) as resp:
            outputs = {o["name"]: o["data"] for o in (await resp.json())["outputs"]}
        assert outputs["path"] == ["escalated"]
        assert outputs["reason"] == ["forced_hub"]

        async with app.get(url + "/metrics") as resp:
            metrics = await resp.text()
        assert (
            'escalade_agent_requests_total{path="degraded",reason="embedding_out_of_band"} 30.0'
            in metrics
        )
        assert "escalade_agent_request_latency_seconds_bucket" in metrics
        assert 'escalade_agent_breaker_state{state="closed"} 1.0' in metrics
        assert "escalade_agent_hub_attested 1.0" in metrics
        assert "escalade_agent_outbox_depth" in metrics

        # Every answer's outcome record reaches the hub, once.
        async def drained() -> bool:
            return (await health(app, url)).outbox_depth == 0

        await until(drained, what="outbox delivered")
        status = await health(app, url)
        assert status.status == "ok"

    device = DeviceIdentity.load(tmp_path / "agent")
    store = Store.open(sqlite_url(tmp_path / "hub"))
    try:
        # The Origin check's answer, these, the tritonclient rows, the forced v2 row.
        total = 1 + len(answers) + 8 + 1
        assert count_outcomes(store.engine, device.device_id) == total
        assert store.get_device(device.device_id).status == "active"  # type: ignore[union-attr]
    finally:
        store.close()
    assert len(ids(answers)) == len(answers)
    log = (tmp_path / "agent.log").read_text()
    assert "RuntimeWarning" not in log
    assert "Traceback" not in log


@pytest.mark.skipif(
    "TensorrtExecutionProvider" not in ort.get_available_providers(),
    reason="TensorRT execution provider unavailable (no NVIDIA GPU / onnxruntime-gpu here)",
)
def test_tensorrt_provider_matches_the_cpu(bundle_dir: Path, tmp_path: Path) -> None:
    """With the tensorrt extra on an NVIDIA GPU: engines cached on disk, outputs as the CPU's."""
    trt = EdgeRuntime(bundle_dir, load_profile("x86-64-nvidia"), data_dir=tmp_path)
    cpu = EdgeRuntime(bundle_dir, load_profile("x86-64-cpu"))
    assert trt.providers[0] == "TensorrtExecutionProvider"
    with np.load(verified_path(bundle_dir, trt.manifest.test_split)) as data:
        X = np.asarray(data["X"][:64], dtype=np.float32)
    got = np.stack([r.probabilities for r in trt.infer_batch(X)])
    want = np.stack([r.probabilities for r in cpu.infer_batch(X)])
    # fp16 engines: probabilities within 1e-2, and the same labels nearly everywhere.
    assert np.abs(got - want).max() < 1e-2
    assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.98
    assert any((tmp_path / "trt-engines").iterdir()), "no engine written to the cache"
