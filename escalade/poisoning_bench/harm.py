"""Harm before quarantine: attacker devices that keep sending one attack, against what the hub
does about a device (reputation, audits by re-encoding), and honest devices for false alarms.

A device is quarantined by whichever comes first: its reputation CUSUM over the check scores
(`cloud_hub.poisoning.reputation`) or an audit it fails (`audit_sim`). Harm is the number of
flipped answers it got before then: messages the hub answered (score <= the refusal band) whose
answer differs from the one the clean embedding gets. The message that quarantines a device is
still answered (the hub decides after answering), so it counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.checks import CheckResult
from cloud_hub.poisoning.reputation import Reputation, ReputationParams, update
from escalade.poisoning_bench.audit_sim import AuditedStream, Forged, first_quarantine
from escalade.poisoning_bench.report import HonestFleetRow
from escalade.poisoning_bench.streams import quarantined_after

F32 = NDArray[np.float32]
# The target: quarantined with proof within 300 messages (at a 1% audit rate).
TARGET_MESSAGES = 300


@dataclass(frozen=True, slots=True)
class Harm:
    audit_rate: float
    audit_reveal: str | None
    devices: int
    messages_to_quarantine: float | None  # median over devices; None: most never within the run
    quarantined_share: float
    quarantined_by_target: float  # share quarantined within TARGET_MESSAGES
    flipped_before_quarantine: float  # mean per attacker device


@dataclass
class HarmSim:
    """`devices` attacker devices, `messages` each, inputs drawn from the test split."""

    params: ReputationParams
    stream: AuditedStream
    devices: int
    messages: int

    def attackers(
        self,
        results: Sequence[CheckResult] | None,
        forged: Forged,
        *,
        rate: float = 0.0,
        strategy: str | None = None,
    ) -> Harm:
        """Reputation alone when `strategy` is None (audits off), else reputation and audits;
        audits alone when `results` is None (no check results: reputation off)."""
        at: list[float] = []
        harm: list[int] = []
        rng = self.stream.rng
        for _ in range(self.devices):
            inputs = rng.integers(0, len(forged.embeddings), size=self.messages)
            by_reputation = (
                None
                if results is None
                else quarantined_after([results[k] for k in inputs], self.params)
            )
            by_audit = (
                None
                if strategy is None
                else self.stream.caught_at(strategy, rate, forged, inputs, self.messages)
            )
            caught = first_quarantine(by_reputation, by_audit)
            within = caught is not None and caught <= self.messages
            stop = caught if caught is not None and within else self.messages
            at.append(float(stop) if within else math.inf)
            harm.append(int(forged.flipped[inputs[:stop]].sum()))
        median = float(np.median(at))
        return Harm(
            audit_rate=rate if strategy is not None else 0.0,
            audit_reveal=strategy,
            devices=self.devices,
            messages_to_quarantine=median if math.isfinite(median) else None,
            quarantined_share=round(float(np.isfinite(at).mean()), 4),
            quarantined_by_target=round(float((np.asarray(at) <= TARGET_MESSAGES).mean()), 4),
            flipped_before_quarantine=round(float(np.mean(harm)), 1),
        )

    def honest(
        self,
        pools: Sequence[Sequence[CheckResult]],
        inputs: F32,
        sent: F32,
        *,
        rates: Sequence[float],
        devices: int,
        drifting: int,
    ) -> list[HonestFleetRow]:
        """Honest devices under reputation and audits at each rate. `pools[0][i]` is the hub's
        check of honest message i, whose input is `inputs[i]` and whose wire embedding (encoded
        by the device's own execution setting) is `sent[i]`; `drifting` devices move through
        the later pools (natural drift: their reputation only). A device counts as falsely
        quarantined when its reputation or any of its audits would quarantine it."""
        rng = self.stream.rng
        by_reputation = np.zeros(devices, bool)
        picks = rng.integers(0, len(inputs), size=(devices, self.messages))
        for device in range(devices):
            levels = len(pools) if device < drifting else 1
            rep = Reputation()
            for t in range(self.messages):
                pool = pools[t * levels // self.messages]
                k = int(picks[device, t]) if levels == 1 else int(rng.integers(len(pool)))
                rep = update(rep, pool[k], self.params)
            by_reputation[device] = rep.state == "quarantined"
        rows = []
        for rate in rates:
            audits, failed, worst = 0, np.zeros(devices, bool), 0.0
            for device in range(devices):
                ks = picks[device]
                n, bad, distance = self.stream.honest_audits(rate, sent[ks], inputs[ks])
                audits, failed[device], worst = audits + n, bad, max(worst, distance)
            rows.append(
                HonestFleetRow(
                    audit_rate=rate,
                    devices=devices,
                    messages=self.messages,
                    audits=audits,
                    reputation_quarantines=int(by_reputation.sum()),
                    audit_quarantines=int(failed.sum()),
                    false_quarantines=int((by_reputation | failed).sum()),
                    worst_distance=round(worst, 6),
                )
            )
        return rows
