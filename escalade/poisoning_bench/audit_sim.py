"""Audits by re-encoding, simulated per device with the hub's own pieces.

Shared by `escalade bench audits` and `escalade bench poisoning`. Every message is drawn for
audit by the hub's sampler (`AuditSampler`, a keyed PRF over a fresh request digest); an audited
message is judged by the hub's code: the reveal sealed and opened (`provenance`), the commitment
recomputed, the input re-encoded by the bundle's encoder (`Reencoder`, input domain included)
and compared (`judge_reveal`). Only answered messages are audited: a refused one has no answer
to carry the audit flag.

How an attacker answers an audit (`STRATEGIES`):
- ``honest_input``: reveals the real input behind the message: it re-encodes to the clean
  embedding, not the forged one (encoding_mismatch).
- ``refuse``: reveals nothing; quarantined when the deadline passes, `deadline_messages` later.
- ``crafted_input``: reveals an input made to encode to the forged embedding (box-constrained
  Gauss-Newton through the encoder, from the real input: exact for the linear PCA encoders).
  It passes re-encoding when the forged embedding has a preimage in the input domain that the
  search finds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from scipy.optimize import lsq_linear

from cloud_hub.audits import AuditSampler, judge_reveal
from cloud_hub.audits.reencoder import Reencoder
from escalade_protocol.artifacts import EMBEDDING, ENCODER_INPUT, load_manifest, verified_path
from escalade_protocol.keys import X25519PrivateKey
from escalade_protocol.provenance import Revealed, open_reveal, seal_reveal
from escalade_protocol.tensor import Tensor

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
RATES = (0.005, 0.01, 0.02, 0.05)
STRATEGIES = ("honest_input", "refuse", "crafted_input")
# Crafted reveals judged for real per attack; their pass share stands for every crafted audit.
CRAFTED_SAMPLE = 100
CRAFT_ITERATIONS = 10  # Gauss-Newton steps toward one crafted preimage


def device_embeddings(bundle_dir: Path, x: F32) -> F32:
    """The encoder as a differently configured device runs it (graph optimisation off, two
    threads): the honest variance an audit must tolerate. Before the wire trip."""
    manifest = load_manifest(bundle_dir)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(verified_path(bundle_dir, manifest.encoder)),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )
    (out,) = session.run([EMBEDDING], {ENCODER_INPUT: np.asarray(x, np.float32)})
    return np.asarray(out, np.float32)


class Judge:
    """The hub's audit of one message, with the hub's own pieces."""

    def __init__(self, bundle_dir: Path, wire_dtype: str, tolerance: float) -> None:
        self.reencoder = Reencoder(bundle_dir)
        self.key = X25519PrivateKey.generate()
        self.wire_dtype = wire_dtype
        self.tolerance = tolerance

    def reveal(self, sent: F32, revealed_input: F32) -> tuple[bytes, bytes, bytes]:
        """The device's side: commit at send time, seal the reveal when audited."""
        digest = os.urandom(32)
        revealed = Revealed(os.urandom(32), Tensor.from_numpy(revealed_input, "float32"))
        committed = revealed.commitment(Tensor.from_numpy(sent, self.wire_dtype).encode())
        sealed = seal_reveal(revealed, self.key.public_key(), request_digest=digest)
        return digest, committed, sealed

    def judge(
        self, sent: F32, digest: bytes, committed: bytes, sealed: bytes
    ) -> tuple[bool, float]:
        """The hub's side, as `Auditor` does it: open, recompute, re-encode, compare."""
        opened = open_reveal(sealed, self.key, request_digest=digest)
        verdict = judge_reveal(
            committed=committed,
            recomputed=opened.commitment(Tensor.from_numpy(sent, self.wire_dtype).encode()),
            sent=sent,
            reencoded=self.reencoder.embedding(opened.input),
            tolerance=self.tolerance,
        )
        return verdict.passed, math.inf if verdict.distance is None else verdict.distance

    def passes(self, sent: F32, revealed_input: F32) -> tuple[bool, float]:
        return self.judge(sent, *self.reveal(sent, revealed_input))


@dataclass(frozen=True)
class Forged:
    """One attack on every test input: the forged embeddings, which of them the hub answers,
    which answers it flips, and how often a crafted reveal for one passes the audit."""

    embeddings: F32
    answered: NDArray[np.bool_]
    flipped: NDArray[np.bool_]
    crafted_passes: float


class Crafter:
    """The crafted-input attacker: for each forged embedding, an input in the bundle's domain
    whose encoding comes closest to it, searched through the encoder itself."""

    def __init__(self, judge: Judge, bundle_dir: Path) -> None:
        self.judge = judge
        domain = judge.reencoder.domain
        self.low, self.high = (domain.low, domain.high) if domain else (-np.inf, np.inf)
        manifest = load_manifest(bundle_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(verified_path(bundle_dir, manifest.encoder)),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    def _encode(self, x: F64) -> F64:
        (out,) = self._session.run([EMBEDDING], {ENCODER_INPUT: np.asarray(x, np.float32)})
        return np.asarray(out, np.float64)

    def craft(self, target: F32, start: F32) -> F32:
        """One input in [low, high] whose encoding comes closest to `target`: bounded
        Gauss-Newton from `start` (one step for a linear encoder), halving steps that do not
        help (the MLP's ReLUs make the linearisation local)."""
        dim = len(start)
        # Central differences, one batched encoder run per Jacobian (2 d rows).
        h = 1e-2 * max(1.0, float(np.abs(start).max()))
        eye = h * np.eye(dim)
        goal = target.astype(np.float64)
        u = np.clip(start.astype(np.float64), self.low, self.high)
        error = float(np.linalg.norm(self._encode(u[None, :])[0] - goal))
        for _ in range(CRAFT_ITERATIONS):
            out = self._encode(np.concatenate([u + eye, u - eye, u[None, :]]))
            jacobian = (out[:dim] - out[dim : 2 * dim]).T / (2 * h)
            bounds = (self.low - u, self.high - u)
            step = lsq_linear(jacobian, goal - out[-1], bounds=bounds).x
            for _ in range(4):
                trial = np.clip(u + step, self.low, self.high)
                trial_error = float(np.linalg.norm(self._encode(trial[None, :])[0] - goal))
                if trial_error < error:
                    u, error = trial, trial_error
                    break
                step = step / 2
            else:
                break
            if error <= 1e-4 * float(np.linalg.norm(goal)):
                break
        return np.asarray(u, np.float32)

    def forge(
        self,
        embeddings: F32,
        inputs: F32,
        answered: NDArray[np.bool_],
        flipped: NDArray[np.bool_],
        rng: np.random.Generator,
    ) -> Forged:
        """`Forged`, with the crafted reveals of a sample judged by the hub's code."""
        size = min(CRAFTED_SAMPLE, len(embeddings))
        sample = rng.choice(len(embeddings), size=size, replace=False)
        passes = [
            self.judge.passes(embeddings[i], self.craft(embeddings[i], inputs[i]))[0]
            for i in sample
        ]
        return Forged(embeddings, answered, flipped, float(np.mean(passes)))


@dataclass
class AuditedStream:
    """When audits catch one attacker device sending `inputs` (indices into the test split)."""

    judge: Judge
    sampler: AuditSampler
    x: F32  # the real inputs behind the forged embeddings
    deadline_messages: int
    rng: np.random.Generator

    def _digest(self) -> bytes:
        # Drawn from the seeded generator, not os.urandom: the hub's digests are unpredictable
        # to a device, and a seeded run (and the tests that read it) must be repeatable.
        return self.rng.bytes(32)

    def caught_at(
        self, strategy: str, rate: float, forged: Forged, inputs: I64, messages: int
    ) -> int | None:
        """The 1-based message whose audit quarantines the device (a refusal: when its
        deadline passes), or None if no audit within `messages` does."""
        for i in range(1, messages + 1):
            k = int(inputs[i - 1])
            if not forged.answered[k] or not self.sampler.selected(self._digest(), rate):
                continue
            if strategy == "refuse":
                return i + self.deadline_messages
            if strategy == "honest_input":
                if not self.judge.passes(forged.embeddings[k], self.x[k])[0]:
                    return i
            # crafted: an audit passes as often as the crafted reveals judged for real did
            elif self.rng.random() >= forged.crafted_passes:
                return i
        return None

    def honest_audits(self, rate: float, sent: F32, inputs: F32) -> tuple[int, bool, float]:
        """An honest device sending `sent` (wire embeddings of `inputs`, one message each):
        (audits, any failed, worst distance)."""
        audits, failed, worst = 0, False, 0.0
        for k in range(len(sent)):
            if not self.sampler.selected(self._digest(), rate):
                continue
            ok, distance = self.judge.passes(sent[k], inputs[k])
            audits += 1
            worst = max(worst, distance)
            failed = failed or not ok
        return audits, failed, worst


def first_quarantine(*at: int | None) -> int | None:
    """The earliest of several quarantine times (None: never)."""
    times = [t for t in at if t is not None]
    return min(times) if times else None
