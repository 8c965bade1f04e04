"""The hub's escalation path against a bare baseline measured in the same run.

Escalade: a real hub process (`cloud_hub.cli serve`), a device enrolled with a one-time token,
the hub attested by the real client code, then sealed envelopes POSTed to /v1/escalate and
every signed answer verified, exactly as `edge_agent.hub_client` does it.

Baseline: `bench/_baseline_server.py`, the same cryptography and the same ONNX model with no
framework around them (no database, no replay check, no parsing layers, no thread hop), fed
requests and replies of the same sizes.

Both servers run side by side; the two are measured in alternating rounds (ABBA) so that the
machine's drift over minutes falls on both alike. This process is the load generator; the
servers are child processes, stopped on the way out whatever happens.

    PYTHONPATH=. python bench/escalation.py [--models DIR] [--requests N] [--json OUT]
    PYTHONPATH=. python bench/escalation.py --suites   # X25519 vs ML-KEM-768 + X25519
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from prometheus_client.parser import text_string_to_metric_families

from attestation import AppraisalPolicy
from cloud_hub.identity import HubIdentity
from edge_agent.enrollment import enroll
from edge_agent.hub_client import ENVELOPE_CONTENT_TYPE, HubClient
from edge_agent.identity import DeviceIdentity
from escalade.procs import Service, ServiceError, migrate_hub, module_command, run_step, service
from escalade_protocol import envelope, eventloop
from escalade_protocol.answer import request_digest, verify_answer
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    BundleError,
    ModelManifest,
    load_manifest,
    verified_path,
)
from escalade_protocol.hub_keys import load_hub_public
from escalade_protocol.keys import public_bytes
from escalade_protocol.tensor import Tensor

F32 = npt.NDArray[np.float32]
HPKE_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
BASELINE_SERVER = Path(__file__).with_name("_baseline_server.py")
LATENCY_TARGET = 1.3  # escalade / baseline, at most
THROUGHPUT_TARGET = 0.80  # escalade / baseline, at least
BATCHING_TARGET = 3.0  # batched / unbatched throughput at 32 in flight, at least
BATCHING_P99_TARGET = 2.0  # batched / unbatched p99 under that load, at most
# The costly hub for --batching: ~1.3 ms per input on this machine's cores, unbatched.
BATCHING_HUB_HIDDEN = (2048, 2048)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the two systems under test, as the client sees them --------------------------------------


@dataclass
class System:
    """One server: how to build a request (client crypto) and how to check its reply."""

    name: str
    url: str
    content_type: str
    pid: int
    # Seal/sign one embedding into a request body.
    prepare: Callable[[F32], bytes]
    # Verify a reply for a request; raise if it is wrong.
    check: Callable[[bytes, bytes], None]
    latency_ns: list[int] = field(default_factory=list)
    e2e_ns: list[int] = field(default_factory=list)
    # Per-request round trips during the throughput runs (latency under load).
    load_latency_ns: list[int] = field(default_factory=list)
    metrics_url: str | None = None
    tput_requests: int = 0
    tput_wall_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    def reset_throughput(self) -> None:
        self.tput_requests = 0
        self.tput_wall_s = self.server_cpu_s = self.client_cpu_s = 0.0
        self.load_latency_ns.clear()


def escalade_system(
    hub: Service,
    *,
    identity: DeviceIdentity,
    manifest: ModelManifest,
    hub_key_id: bytes,
    encryption_key: envelope.HubPublicKey,
    signing_key: Ed25519PublicKey,
    suite: envelope.HpkeSuiteId = envelope.HpkeSuiteId.X25519,
) -> System:
    # Sequence numbers start from the clock, like HubClient's, so they rise across runs.
    seq = time.time_ns() // 1000

    def prepare(embedding: F32) -> bytes:
        # The body of HubClient._send, minus the HTTP call.
        nonlocal seq
        seq += 1
        header = envelope.EnvelopeHeader(
            device_id=identity.device_id,
            model_id=manifest.model_id,
            model_version=manifest.model_version,
            seq=seq,
            timestamp_ms=time.time_ns() // 1_000_000,
            nonce=os.urandom(envelope.NONCE_SIZE),
            hub_key_id=hub_key_id,
            suite=suite,
        )
        payload = Tensor.from_numpy(embedding, manifest.wire_dtype)
        return envelope.seal(header, payload, device_key=identity.key, hub_key=encryption_key)

    def check(request: bytes, reply: bytes) -> None:
        verify_answer(reply, signing_key, expected_digest=request_digest(request))

    return System(
        "escalade",
        hub.url + "/v1/escalate",
        ENVELOPE_CONTENT_TYPE,
        hub.process.pid,
        prepare,
        check,
    )


def baseline_system(
    server: Service,
    *,
    device_key: Ed25519PrivateKey,
    wire_dtype: str,
    encryption_key: X25519PublicKey,
    signing_key: Ed25519PublicKey,
    header_bytes: int,
    reply_bytes: int,
) -> System:
    wire = np.dtype(wire_dtype).newbyteorder("<")

    def prepare(embedding: F32) -> bytes:
        # An opaque header of the envelope header's size, bound into HPKE like the real one.
        header = os.urandom(header_bytes)
        plaintext = np.ascontiguousarray(embedding, dtype=wire).tobytes()
        body = (
            header_bytes.to_bytes(2, "big")
            + header
            + HPKE_SUITE.encrypt(plaintext, encryption_key, info=header)
        )
        return body + device_key.sign(body)

    def check(request: bytes, reply: bytes) -> None:
        if len(reply) != reply_bytes:
            raise ValueError(f"baseline reply is {len(reply)} bytes, expected {reply_bytes}")
        signing_key.verify(reply[-64:], reply[:-64])
        if reply[:32] != hashlib.sha256(request).digest():
            raise ValueError("baseline reply is for another request")

    return System(
        "baseline",
        server.url + "/escalate",
        "application/octet-stream",
        server.process.pid,
        prepare,
        check,
    )


# -- measurement -----------------------------------------------------------------------------


def pin_processes(*server_pids: int) -> None:
    """Servers on the last CPU, this load generator on the others: each server gets one whole
    core (the unit of DESIGN.md's per-core figures) and never competes with its own load."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    for pid in server_pids:
        # All threads of the server: the hub's worker thread and ONNX Runtime's included.
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))


def process_cpu_s(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def post(http: aiohttp.ClientSession, system: System, body: bytes) -> bytes:
    async with http.post(
        system.url, data=body, headers={"Content-Type": system.content_type}
    ) as response:
        reply = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{system.name} answered HTTP {response.status}: {reply[:300]!r}")
        return reply


async def measure_latency(
    http: aiohttp.ClientSession, system: System, embeddings: Sequence[F32], record: bool = True
) -> None:
    """One request in flight. Latency is the HTTP round trip (POST sent to answer read): the
    hub's share; e2e adds the client's sealing and checking, the same work on both sides."""
    for embedding in embeddings:
        start = time.perf_counter_ns()
        body = system.prepare(embedding)
        sent = time.perf_counter_ns()
        reply = await post(http, system, body)
        received = time.perf_counter_ns()
        system.check(body, reply)
        if record:
            system.latency_ns.append(received - sent)
            system.e2e_ns.append(time.perf_counter_ns() - start)


async def measure_throughput(
    http: aiohttp.ClientSession, system: System, embeddings: Sequence[F32], concurrency: int
) -> None:
    """`concurrency` requests in flight over a fixed count. Requests are sealed before and
    replies checked after the timed window, so the load generator (this process, on the other
    core) stays lighter than the server and the figure is the server's capacity."""
    bodies = [system.prepare(e) for e in embeddings]
    replies: list[bytes] = [b""] * len(bodies)
    next_index = iter(range(len(bodies)))

    load_latency = system.load_latency_ns

    async def worker() -> None:
        for i in next_index:
            sent = time.perf_counter_ns()
            replies[i] = await post(http, system, bodies[i])
            load_latency.append(time.perf_counter_ns() - sent)

    cpu_client, cpu_server = time.process_time(), process_cpu_s(system.pid)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    system.server_cpu_s += process_cpu_s(system.pid) - cpu_server
    system.client_cpu_s += time.process_time() - cpu_client
    system.tput_wall_s += wall
    system.tput_requests += len(bodies)
    for body, reply in zip(bodies, replies, strict=True):
        system.check(body, reply)


def split(items: Sequence[F32], count: int, parts: int) -> list[list[F32]]:
    """`count` items drawn cyclically from `items`, cut into `parts` nearly equal chunks."""
    drawn = [items[i % len(items)] for i in range(count)]
    bounds = [k * count // parts for k in range(parts + 1)]
    return [drawn[a:b] for a, b in itertools.pairwise(bounds)]


async def run_rounds(
    http: aiohttp.ClientSession,
    systems: tuple[System, System],
    embeddings: Sequence[F32],
    *,
    requests: int,
    throughput_requests: int,
    concurrency: int,
    rounds: int,
) -> None:
    latency_chunks = split(embeddings, requests, rounds)
    tput_chunks = split(embeddings, throughput_requests, rounds)
    for r in range(rounds):
        # ABBA: the order flips every round, so neither system always runs first.
        order = systems if r % 2 == 0 else systems[::-1]
        for system in order:
            n_before = len(system.latency_ns)
            await measure_latency(http, system, latency_chunks[r])
            chunk = np.array(system.latency_ns[n_before:])
            progress(
                f"  round {r + 1}/{rounds} {system.name:8} latency: {len(chunk)} requests, "
                f"p50 {np.percentile(chunk, 50) / 1000:.0f} µs"
            )
        for system in order:
            wall_before = system.tput_wall_s
            await measure_throughput(http, system, tput_chunks[r], concurrency)
            wall = system.tput_wall_s - wall_before
            progress(
                f"  round {r + 1}/{rounds} {system.name:8} throughput: {len(tput_chunks[r])} "
                f"requests at {concurrency} in flight, {len(tput_chunks[r]) / wall:.0f} req/s"
            )


def _percentile_us(samples_ns: list[int], q: float) -> float:
    return float(np.percentile(np.array(samples_ns) / 1000, q)) if samples_ns else float("nan")


def summary(system: System) -> dict[str, float]:
    n = system.tput_requests
    return {
        "loaded_p50_us": _percentile_us(system.load_latency_ns, 50),
        "loaded_p99_us": _percentile_us(system.load_latency_ns, 99),
        "latency_p50_us": _percentile_us(system.latency_ns, 50),
        "latency_p99_us": _percentile_us(system.latency_ns, 99),
        "e2e_p50_us": _percentile_us(system.e2e_ns, 50),
        "throughput_rps": n / system.tput_wall_s,
        "server_cpu_us_per_request": system.server_cpu_s / n * 1e6,
        "client_cpu_us_per_request": system.client_cpu_s / n * 1e6,
        # Busy fraction of the load generator during the throughput runs: near 1.0 would mean
        # the client, not the server, set the pace.
        "client_busy": system.client_cpu_s / system.tput_wall_s,
    }


# -- setup -----------------------------------------------------------------------------------


def bundle_embeddings(bundle: Path, manifest: ModelManifest) -> list[F32]:
    """Real embeddings: the bundle's test inputs through its encoder, as a device computes them."""
    with np.load(verified_path(bundle, manifest.test_split)) as data:
        inputs = np.asarray(data["X"], dtype=np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder = ort.InferenceSession(
        str(verified_path(bundle, manifest.encoder)),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )
    return [
        np.asarray(encoder.run([EMBEDDING], {ENCODER_INPUT: row.reshape(1, -1)})[0][0], np.float32)
        for row in inputs
    ]


async def fetch_baseline_keys(
    http: aiohttp.ClientSession, url: str
) -> tuple[X25519PublicKey, Ed25519PublicKey]:
    async with http.get(url + "/keys") as response:
        keys = await response.json()
    return (
        X25519PublicKey.from_public_bytes(bytes.fromhex(keys["encryption_key"])),
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(keys["signing_key"])),
    )


def prepare_bundle(models: str | None, work: Path, *, costly_hub: bool = False) -> Path:
    if models is not None:
        return Path(models)
    from escalade.modelbuild import build_bundle  # needs scikit-learn: only here

    def step(description: str, done: int, total: int) -> None:
        if done == total:
            progress(f"  {description}: done")

    hidden = BATCHING_HUB_HIDDEN if costly_hub else None
    progress(f"building the digits bundle (seed 0, hub layers {hidden or 'as the recipe'}) ...")
    build_bundle("digits", work / "bundle", seed=0, on_step=step, hub_hidden=hidden, hub_epochs=10)
    return work / "bundle"


async def start_hub(
    stack: contextlib.AsyncExitStack,
    http: aiohttp.ClientSession,
    name: str,
    *,
    bundle: Path,
    manifest: ModelManifest,
    work: Path,
    extra: Sequence[str] = (),
    event_loop: str,
) -> tuple[Service, System, DeviceIdentity]:
    """A real hub process with one enrolled device, attested as HubClient does it."""
    hub_dir = work / name
    await migrate_hub(hub_dir)
    hub_argv = module_command(
        "cloud_hub.cli", "serve", "--data-dir", str(hub_dir), "--models", str(bundle),
        "--port", "0", "--allow-simulated-tee", "--ready", "--event-loop", event_loop, *extra,
    )  # fmt: skip
    hub = await stack.enter_async_context(service(name, hub_argv, log_dir=work))
    token = await run_step(
        module_command("cloud_hub.cli", "tokens", "create", "--data-dir", str(hub_dir), "--quiet"),
        what="creating an enrollment token",
    )
    identity = await enroll(
        hub_url=hub.url, token=token.strip(), data_dir=work / f"{name}-device", profile="bench"
    )
    attested = await HubClient(
        http,
        base_url=hub.url,
        identity=identity,
        manifest=manifest,
        policy=AppraisalPolicy(allow_simulated_tee=True),
    ).attest()
    system = escalade_system(
        hub,
        identity=identity,
        manifest=manifest,
        hub_key_id=attested.key_id,
        encryption_key=attested.encryption_key,
        signing_key=attested.signing_key,
    )
    system.name = name
    system.metrics_url = hub.url + "/metrics"
    return hub, system, identity


def cancel_on_sigterm() -> None:
    """SIGTERM cancels the run like Ctrl-C does, so the exit stack still stops the servers
    (they run in sessions of their own and would outlive an abrupt exit)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def run(args: argparse.Namespace, bundle: Path, work: Path) -> dict[str, Any]:
    cancel_on_sigterm()
    manifest = load_manifest(bundle)
    embeddings = bundle_embeddings(bundle, manifest)
    progress(
        f"model {manifest.model_id} v{manifest.model_version}: {len(embeddings)} test "
        f"embeddings of {manifest.embedding_dim} x {manifest.wire_dtype}"
    )

    event_loop = eventloop.resolve(args.event_loop)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        progress("starting the hub ...")
        hub, escalade, identity = await start_hub(
            stack, http, "escalade", bundle=bundle, manifest=manifest, work=work,
            event_loop=event_loop,
        )  # fmt: skip

        # Sizes of the real exchange, which the baseline's requests and replies copy.
        sample = escalade.prepare(embeddings[0])
        answer = await post(http, escalade, sample)
        escalade.check(sample, answer)
        plaintext_bytes = len(Tensor.from_numpy(embeddings[0], manifest.wire_dtype).data)
        # u16 length | header | HPKE enc (32) || ciphertext (+16 tag) | signature (64)
        baseline_header = len(sample) - (2 + 32 + plaintext_bytes + 16 + 64)

        progress("starting the baseline server ...")
        baseline_argv = [
            sys.executable, str(BASELINE_SERVER),
            "--model", str(verified_path(bundle, manifest.hub)),
            "--device-key", public_bytes(identity.key.public_key()).hex(),
            "--wire-dtype", manifest.wire_dtype,
            "--reply-bytes", str(len(answer)),
            "--event-loop", event_loop,
        ]  # fmt: skip
        server = await stack.enter_async_context(service("baseline", baseline_argv, log_dir=work))
        enc_key, sig_key = await fetch_baseline_keys(http, server.url)
        if args.pin:
            pin_processes(hub.process.pid, server.process.pid)
        baseline = baseline_system(
            server,
            device_key=identity.key,
            wire_dtype=manifest.wire_dtype,
            encryption_key=enc_key,
            signing_key=sig_key,
            header_bytes=baseline_header,
            reply_bytes=len(answer),
        )
        probe = baseline.prepare(embeddings[0])
        if len(probe) != len(sample):
            raise RuntimeError(f"request sizes differ: baseline {len(probe)}, hub {len(sample)}")

        progress(f"warming up ({args.warmup} requests each) ...")
        for system in (baseline, escalade):
            warm = split(embeddings, args.warmup, 1)[0]
            await measure_latency(http, system, warm, record=False)
            await measure_throughput(http, system, warm, args.concurrency)
            system.reset_throughput()

        progress(
            f"measuring: {args.requests} requests one at a time, {args.throughput_requests} "
            f"at {args.concurrency} in flight, each system, in {args.rounds} rounds"
        )
        await run_rounds(
            http,
            (baseline, escalade),
            embeddings,
            requests=args.requests,
            throughput_requests=args.throughput_requests,
            concurrency=args.concurrency,
            rounds=args.rounds,
        )
        progress("group commit and model batch sizes, escalade alone:")
        escalade_alone = summary(escalade)
        sizes = await group_sizes(http, escalade, embeddings, max(200, args.requests // 2))

    base, esc = summary(baseline), escalade_alone
    return {
        "config": {
            "requests": args.requests,
            "throughput_requests": args.throughput_requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "pinned": args.pin,
            "event_loop": event_loop,
            "model": f"{manifest.model_id} v{manifest.model_version}",
            "embedding": f"{manifest.embedding_dim} x {manifest.wire_dtype}",
            "request_bytes": len(sample),
            "reply_bytes": len(answer),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "baseline": base,
        "escalade": esc,
        "group_sizes": sizes,
        "ratios": {
            "latency_p50": esc["latency_p50_us"] / base["latency_p50_us"],
            "latency_p99": esc["latency_p99_us"] / base["latency_p99_us"],
            "throughput": esc["throughput_rps"] / base["throughput_rps"],
        },
        "targets": {"latency_p50_max": LATENCY_TARGET, "throughput_min": THROUGHPUT_TARGET},
    }


# -- what the hub reports about itself -------------------------------------------------------


async def hub_histogram(http: aiohttp.ClientSession, url: str, name: str) -> tuple[float, float]:
    """(sum, count) of one of the hub's Prometheus histograms."""
    async with http.get(url) as response:
        text = await response.text()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_sum":
                total = sample.value
            elif sample.name == name + "_count":
                count = sample.value
    return total, count


async def group_sizes(
    http: aiohttp.ClientSession, system: System, embeddings: Sequence[F32], requests: int
) -> dict[str, dict[str, float]]:
    """Mean records per group commit and embeddings per model run at 1, 8 and 32 in flight."""
    assert system.metrics_url is not None
    sizes: dict[str, dict[str, float]] = {}
    for clients in (1, 8, 32):
        before = [
            await hub_histogram(http, system.metrics_url, name)
            for name in ("escalade_hub_commit_size", "escalade_hub_model_batch_size")
        ]
        await measure_throughput(http, system, split(embeddings, requests, 1)[0], clients)
        after = [
            await hub_histogram(http, system.metrics_url, name)
            for name in ("escalade_hub_commit_size", "escalade_hub_model_batch_size")
        ]
        means = [(a[0] - b[0]) / max(1.0, a[1] - b[1]) for a, b in zip(after, before, strict=True)]
        sizes[str(clients)] = {"records_per_commit": means[0], "embeddings_per_run": means[1]}
        progress(
            f"  {clients:2} in flight: {means[0]:.1f} records per commit, "
            f"{means[1]:.1f} embeddings per model run"
        )
    return sizes


# -- dynamic batching: the same hub with and without it --------------------------------------


def model_latency_us(bundle: Path, manifest: ModelManifest) -> float:
    from cloud_hub.serving import HubModel

    return HubModel(bundle).measure_latency() * 1e6


def crypto_us(
    suite: envelope.HpkeSuiteId, embedding: F32, manifest: ModelManifest
) -> dict[str, float]:
    """Seal and open one envelope in this process, alone: the suite's own cost, no HTTP."""
    hub = HubIdentity.generate()
    public = (
        hub.encryption_key.public_key()
        if suite is envelope.HpkeSuiteId.X25519
        else load_hub_public(suite, hub.offered[0].public_key)
    )
    private = hub.private_for(suite)
    assert private is not None
    device = Ed25519PrivateKey.generate()
    header = envelope.EnvelopeHeader(
        device_id=uuid.uuid4(), model_id=manifest.model_id, model_version=1, seq=1,
        timestamp_ms=1, nonce=bytes(16), hub_key_id=hub.key_id, suite=suite,
    )  # fmt: skip
    payload = Tensor.from_numpy(embedding, manifest.wire_dtype)
    runs = 2000
    started = time.perf_counter_ns()
    sealed = [
        envelope.seal(header, payload, device_key=device, hub_key=public) for _ in range(runs)
    ]
    seal_ns = (time.perf_counter_ns() - started) / runs
    parsed = [envelope.parse(body) for body in sealed]
    started = time.perf_counter_ns()
    for one in parsed:
        one.open_payload(private)
    open_ns = (time.perf_counter_ns() - started) / runs
    return {"seal_us": seal_ns / 1000, "open_us": open_ns / 1000, "request_bytes": len(sealed[0])}


async def run_suites(args: argparse.Namespace, bundle: Path, work: Path) -> dict[str, Any]:
    """One hub offering both HPKE suites; one device escalating with X25519 and with the
    hybrid ML-KEM-768 + X25519 suite in alternating (ABBA) rounds, so the post-quantum cost
    per escalation is a difference measured in the same run."""
    cancel_on_sigterm()
    manifest = load_manifest(bundle)
    embeddings = bundle_embeddings(bundle, manifest)
    event_loop = eventloop.resolve(args.event_loop)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        progress("starting the hub ...")
        hub, classical, identity = await start_hub(
            stack, http, "x25519", bundle=bundle, manifest=manifest, work=work,
            event_loop=event_loop,
        )  # fmt: skip
        attested = await HubClient(
            http,
            base_url=hub.url,
            identity=identity,
            manifest=manifest,
            policy=AppraisalPolicy(allow_simulated_tee=True),
            minimum_suite=envelope.HpkeSuiteId.MLKEM768_X25519,
        ).attest()
        hybrid = escalade_system(
            hub,
            identity=identity,
            manifest=manifest,
            hub_key_id=attested.key_id,
            encryption_key=attested.keys.sealing_key,
            signing_key=attested.signing_key,
            suite=attested.keys.suite,
        )
        hybrid.name = "mlkem768"
        if args.pin:
            pin_processes(hub.process.pid)
        systems = (classical, hybrid)
        sizes = {}
        for system in systems:
            sample = system.prepare(embeddings[0])
            system.check(sample, await post(http, system, sample))
            sizes[system.name] = len(sample)
            warm = split(embeddings, args.warmup, 1)[0]
            await measure_latency(http, system, warm, record=False)
            await measure_throughput(http, system, warm, args.concurrency)
            system.reset_throughput()
        await run_rounds(
            http,
            systems,
            embeddings,
            requests=args.requests,
            throughput_requests=args.throughput_requests,
            concurrency=args.concurrency,
            rounds=args.rounds,
        )
    x, pq = summary(classical), summary(hybrid)
    crypto = {
        system.name: crypto_us(suite, embeddings[0], manifest)
        for system, suite in zip(systems, envelope.HpkeSuiteId, strict=True)
    }
    return {
        "config": {
            "model": f"{manifest.model_id} v{manifest.model_version}",
            "requests": args.requests,
            "throughput_requests": args.throughput_requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "pinned": args.pin,
            "event_loop": event_loop,
            "request_bytes": sizes,
        },
        "x25519": x,
        "mlkem768": pq,
        "crypto_us": crypto,
        "per_escalation": {
            "latency_p50_added_us": pq["latency_p50_us"] - x["latency_p50_us"],
            "server_cpu_added_us": pq["server_cpu_us_per_request"] - x["server_cpu_us_per_request"],
            "request_bytes_added": sizes["mlkem768"] - sizes["x25519"],
        },
        "ratios": {
            "latency_p50": pq["latency_p50_us"] / x["latency_p50_us"],
            "throughput": pq["throughput_rps"] / x["throughput_rps"],
            "server_cpu": pq["server_cpu_us_per_request"] / x["server_cpu_us_per_request"],
        },
    }


def print_suites(result: dict[str, Any]) -> None:
    x, pq, crypto = result["x25519"], result["mlkem768"], result["crypto_us"]
    sizes = result["config"]["request_bytes"]
    print()
    print(f"HPKE suites on one hub: {result['config']['model']}, ABBA rounds, same run")
    print(f"{'':36} {'x25519':>10} {'mlkem768':>10} {'ratio':>7}")
    rows = [
        ("latency p50, µs (1 in flight)", x["latency_p50_us"], pq["latency_p50_us"]),
        ("throughput, req/s", x["throughput_rps"], pq["throughput_rps"]),
        ("server CPU per request, µs", x["server_cpu_us_per_request"],
         pq["server_cpu_us_per_request"]),
        ("seal (device), µs, no HTTP", crypto["x25519"]["seal_us"], crypto["mlkem768"]["seal_us"]),
        ("open (hub), µs, no HTTP", crypto["x25519"]["open_us"], crypto["mlkem768"]["open_us"]),
        ("request bytes", sizes["x25519"], sizes["mlkem768"]),
    ]  # fmt: skip
    for label, a, b in rows:
        print(f"{label:36} {a:>10.0f} {b:>10.0f} {b / a:>7.2f}")


async def run_batching(args: argparse.Namespace, bundle: Path, work: Path) -> dict[str, Any]:
    """Two hub processes on one core, one with --max-batch-size 1, one with the default
    batcher, the same costly hub model, `--concurrency` clients (32), rounds in ABBA order."""
    cancel_on_sigterm()
    manifest = load_manifest(bundle)
    embeddings = bundle_embeddings(bundle, manifest)
    per_input_us = model_latency_us(bundle, manifest)
    progress(f"hub model {manifest.model_id}: {per_input_us:.0f} µs per input, unbatched")
    event_loop = eventloop.resolve(args.event_loop)
    connector = aiohttp.TCPConnector(limit=2 * args.concurrency)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        progress("starting the two hubs ...")
        plain_hub, unbatched, _ = await start_hub(
            stack, http, "unbatched", bundle=bundle, manifest=manifest, work=work,
            extra=("--max-batch-size", "1"), event_loop=event_loop,
        )  # fmt: skip
        batched_hub, batched, _ = await start_hub(
            stack, http, "batched", bundle=bundle, manifest=manifest, work=work,
            extra=("--max-batch-size", str(args.max_batch_size)), event_loop=event_loop,
        )  # fmt: skip
        if args.pin:
            pin_processes(plain_hub.process.pid, batched_hub.process.pid)
        systems = (unbatched, batched)
        for system in systems:
            await measure_throughput(http, system, split(embeddings, args.warmup, 1)[0], 8)
            system.reset_throughput()
        assert batched.metrics_url is not None
        before = await hub_histogram(http, batched.metrics_url, "escalade_hub_model_batch_size")
        chunks = split(embeddings, args.throughput_requests, args.rounds)
        for r in range(args.rounds):
            for system in systems if r % 2 == 0 else systems[::-1]:
                wall_before = system.tput_wall_s
                await measure_throughput(http, system, chunks[r], args.concurrency)
                progress(
                    f"  round {r + 1}/{args.rounds} {system.name:9} {len(chunks[r])} requests "
                    f"at {args.concurrency} in flight: "
                    f"{len(chunks[r]) / (system.tput_wall_s - wall_before):.0f} req/s"
                )
        after = await hub_histogram(http, batched.metrics_url, "escalade_hub_model_batch_size")
    plain, fast = summary(unbatched), summary(batched)
    return {
        "config": {
            "model": f"{manifest.model_id} v{manifest.model_version}",
            "model_latency_us_per_input": per_input_us,
            "concurrency": args.concurrency,
            "throughput_requests": args.throughput_requests,
            "rounds": args.rounds,
            "max_batch_size": args.max_batch_size,
            "pinned": args.pin,
            "event_loop": event_loop,
        },
        "unbatched": plain,
        "batched": fast,
        "mean_batch_size": (after[0] - before[0]) / max(1.0, after[1] - before[1]),
        "ratios": {
            "throughput": fast["throughput_rps"] / plain["throughput_rps"],
            "loaded_p99": fast["loaded_p99_us"] / plain["loaded_p99_us"],
        },
        "targets": {"throughput_min": BATCHING_TARGET, "loaded_p99_max": BATCHING_P99_TARGET},
    }


def print_batching(result: dict[str, Any]) -> None:
    cfg, plain, fast, ratios = (
        result["config"], result["unbatched"], result["batched"], result["ratios"]
    )  # fmt: skip
    print()
    print(
        f"dynamic batching: {cfg['model']} at {cfg['model_latency_us_per_input']:.0f} µs per "
        f"input, {cfg['concurrency']} in flight, mean batch {result['mean_batch_size']:.1f}"
    )
    print(f"{'':36} {'unbatched':>10} {'batched':>10} {'ratio':>7}  target")
    tput_ok = "ok" if ratios["throughput"] >= BATCHING_TARGET else "MISSED"
    p99_ok = "ok" if ratios["loaded_p99"] <= BATCHING_P99_TARGET else "MISSED"
    print(
        f"{'throughput, req/s':36} {plain['throughput_rps']:>10.0f} {fast['throughput_rps']:>10.0f}"
        f" {ratios['throughput']:>7.2f}  >= {BATCHING_TARGET:.2f} {tput_ok}"
    )
    print(
        f"{'latency p99 under load, µs':36} {plain['loaded_p99_us']:>10.0f} "
        f"{fast['loaded_p99_us']:>10.0f} {ratios['loaded_p99']:>7.2f}  "
        f"<= {BATCHING_P99_TARGET:.2f} {p99_ok}"
    )
    print(
        f"{'server CPU per request, µs':36} {plain['server_cpu_us_per_request']:>10.0f} "
        f"{fast['server_cpu_us_per_request']:>10.0f}"
    )


def print_table(result: dict[str, Any]) -> None:
    base, esc, ratios = result["baseline"], result["escalade"], result["ratios"]
    cfg = result["config"]
    rows: list[tuple[str, str, float | None, str]] = [
        ("latency p50, µs (1 in flight)", "latency_p50_us", ratios["latency_p50"], "<= 1.30"),
        ("latency p99, µs (1 in flight)", "latency_p99_us", ratios["latency_p99"], ""),
        (f"throughput, req/s ({cfg['concurrency']} in flight)", "throughput_rps",
         ratios["throughput"], ">= 0.80"),
        ("e2e p50 incl. client crypto, µs", "e2e_p50_us", None, ""),
        ("server CPU per request, µs", "server_cpu_us_per_request", None, ""),
        ("load-generator busy fraction", "client_busy", None, ""),
    ]  # fmt: skip
    print()
    print(
        f"escalation path: {cfg['model']}, {cfg['embedding']}, request {cfg['request_bytes']} B, "
        f"reply {cfg['reply_bytes']} B, {cfg['event_loop']} on both"
    )
    print(f"{'':40} {'baseline':>10} {'escalade':>10} {'ratio':>7}  target")
    for label, key, ratio, target in rows:
        fmt = "{:>10.2f}" if key == "client_busy" else "{:>10.0f}"
        ratio_text = "" if ratio is None else f"{ratio:.2f}"
        verdict = ""
        if ratio is not None and target:
            met = ratio <= LATENCY_TARGET if target.startswith("<=") else ratio >= THROUGHPUT_TARGET
            verdict = "ok" if met else "MISSED"
        values = f"{fmt.format(base[key])} {fmt.format(esc[key])}"
        print(f"{label:40} {values} {ratio_text:>7}  {target} {verdict}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Escalade hub escalation path vs a bare baseline")
    parser.add_argument("--models", default=None, help="model bundle (default: build digits)")
    parser.add_argument("--requests", type=int, default=1000, help="latency requests per system")
    parser.add_argument(
        "--throughput-requests",
        type=int,
        default=None,
        help="throughput requests per system (default: 3 x --requests)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (ABBA)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per system")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the servers to one CPU and the load generator to the others",
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop for both servers (default auto: uvloop when installed)",
    )
    parser.add_argument(
        "--batching",
        action="store_true",
        help="instead: the hub with and without dynamic batching, on a costly hub model "
        f"(hidden layers {BATCHING_HUB_HIDDEN}), at --concurrency 32 unless given",
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="for --batching")
    parser.add_argument(
        "--suites",
        action="store_true",
        help="instead: escalations sealed with X25519 vs ML-KEM-768 + X25519 on one hub",
    )
    parser.add_argument("--json", dest="json_out", default=None, help="also write results here")
    args = parser.parse_args(argv)
    if args.batching and "--concurrency" not in (argv or sys.argv):
        args.concurrency = 32
    if args.throughput_requests is None:
        args.throughput_requests = 3 * args.requests
    if min(args.requests, args.throughput_requests) < args.rounds or args.concurrency < 1:
        parser.error("need at least one request per round and one in flight")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="escalade-bench-") as tmp:
        work = Path(tmp)
        try:
            bundle = prepare_bundle(args.models, work, costly_hub=args.batching)
            mode = run_batching if args.batching else run_suites if args.suites else run
            result = asyncio.run(mode(args, bundle, work))
        except (KeyboardInterrupt, asyncio.CancelledError):
            progress("interrupted; servers stopped")
            return 130
        except (BundleError, ServiceError, aiohttp.ClientError, RuntimeError, ValueError) as exc:
            progress(f"benchmark failed, servers stopped: {exc!r}")
            return 1
    (print_batching if args.batching else print_suites if args.suites else print_table)(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
