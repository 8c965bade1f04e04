"""The hub's model network, built beside the bundle's generalist hub model.

Per bundle: the generalist (the bundle's hub model as it is), a small cheaper model, a wide
one, and specialists trained on class groups (Fashion-MNIST: tops / footwear / trousers and
bags; other datasets: groups merged from the edge head's confusions on the calibration
split). Then, on the calibration split's hardest inputs (those devices escalate), the
log-linear pooling weights of each arm and the meta-router's warm start. Prices are declared
proportional to multiply-adds, the generalist's being `base_price` per 1000 inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import onnxruntime as ort

from cloud_hub.models.fusion import SPECIALIST_SLOT, arm_sources, fit_pooling_weights, pool
from cloud_hub.models.meta_router import RouterPrior, features
from escalade.modelbuild.layers import F32, BuildError, Classifier
from escalade.modelbuild.onnx_export import classifier_model, serialize
from escalade.modelbuild.train import I64, Recipe, fit_hub, wire_round
from escalade_protocol.artifacts import (
    EMBEDDING,
    PROBABILITIES,
    ArtifactFile,
    HubModelEntry,
    HubModelKind,
    NetworkArm,
    NetworkSpec,
)

ROUTER_FILE = "network_router.npz"
GENERALIST = "generalist"
SPECIALIST = SPECIALIST_SLOT
# The calibration inputs the weights and the router prior are fitted on: the hardest 30% by
# local max probability, which covers escalation budgets up to 30%.
HARD_SHARE = 0.3
EXPLORATION_RATE = 0.05
EXPORT_TOLERANCE = 1e-4
FASHION_GROUPS = {
    "tops": (0, 2, 3, 4, 6),
    "footwear": (5, 7, 9),
    "trousers-bags": (1, 8),
}
SPECIALIST_GROUPS = 3
# Small: one 64-unit layer, ~28x fewer multiply-adds than the generalist's two 256s (digits);
# wide: two 512-unit layers, ~3.7x more. The wide model trains for half the generalist's
# epochs: on digits that still gains ~0.8 pp over it, in 25 s instead of 50.
SMALL_HIDDEN = (64,)
WIDE_HIDDEN = (512, 512)
ARMS: tuple[tuple[str, ...], ...] = (
    ("small",),
    (GENERALIST,),
    (SPECIALIST,),
    (GENERALIST, SPECIALIST),
    ("wide",),
    ("wide", SPECIALIST),
)


@dataclass(frozen=True)
class _Model:
    name: str
    kind: HubModelKind
    classifier: Classifier
    classes: tuple[int, ...]
    group: str
    file: str


@dataclass
class NetworkBuild:
    """The network's files (name -> bytes) and its manifest section, once they are written."""

    files: dict[str, bytes]
    entries: list[tuple[_Model, int, float, float]] = field(default_factory=list)
    arms: list[NetworkArm] = field(default_factory=list)
    # Per arm, calibration-split accuracy on the hard inputs (for the build's log).
    arm_accuracy: dict[str, float] = field(default_factory=dict)

    def spec(self, artifacts: dict[str, ArtifactFile]) -> NetworkSpec:
        models = tuple(
            HubModelEntry(
                name=m.name,
                kind=m.kind,
                file=artifacts[m.file],
                classes=m.classes,
                group=m.group,
                hidden=m.classifier.hidden,
                macs=macs,
                price_per_1k=round(price, 6),
                calibration_accuracy=round(accuracy, 6),
            )
            for m, macs, price, accuracy in self.entries
        )
        return NetworkSpec(
            models=models,
            arms=tuple(self.arms),
            router=artifacts[ROUTER_FILE],
            exploration_rate=EXPLORATION_RATE,
        )


def macs_of(classifier: Classifier) -> int:
    return int(sum(layer.weight.size for layer in classifier.layers))


def class_groups(
    dataset_slug: str, num_classes: int, edge_labels: I64, y: I64
) -> dict[str, tuple[int, ...]]:
    """Named class groups for the specialists (none below six classes)."""
    if dataset_slug.startswith("fashion-mnist") and num_classes == 10:
        return dict(FASHION_GROUPS)
    if num_classes < 6:
        return {}
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (y, edge_labels), 1.0)
    confusion = confusion + confusion.T
    np.fill_diagonal(confusion, 0.0)
    clusters: list[list[int]] = [[c] for c in range(num_classes)]
    cap = -(-num_classes // SPECIALIST_GROUPS) + 1
    while len(clusters) > SPECIALIST_GROUPS:
        best, pair = -1.0, (0, 1)
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                if len(clusters[i]) + len(clusters[j]) > cap:
                    continue
                link = confusion[np.ix_(clusters[i], clusters[j])].mean()
                if link > best:
                    best, pair = link, (i, j)
        if best < 0:
            break
        i, j = pair
        clusters[i] = sorted(clusters[i] + clusters[j])
        del clusters[j]
    # A class left alone needs no specialist: it joins the group it is most confused with,
    # over the cap (a one-class specialist would have nothing to tell apart).
    while len(clusters) > 1 and min(len(c) for c in clusters) == 1:
        lone = next(k for k, c in enumerate(clusters) if len(c) == 1)
        others = [k for k in range(len(clusters)) if k != lone]
        into = max(others, key=lambda k: confusion[np.ix_(clusters[lone], clusters[k])].mean())
        clusters[into] = sorted(clusters[into] + clusters[lone])
        del clusters[lone]
    return {"g" + "-".join(map(str, c)): tuple(c) for c in sorted(clusters)}


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, embedding: F32) -> F32:
    return np.asarray(session.run([PROBABILITIES], {EMBEDDING: embedding})[0], np.float32)


def _train(
    *,
    recipe: Recipe,
    hub: Classifier,
    hub_file: str,
    groups: dict[str, tuple[int, ...]],
    wire_train: F32,
    y_train: I64,
    seed: int,
    say: Callable[[str, int, int], None],
) -> list[_Model]:
    num_classes = hub.num_classes
    all_classes = tuple(range(num_classes))
    models = [_Model(GENERALIST, "generalist", hub, all_classes, "all", hub_file)]
    sized: tuple[tuple[HubModelKind, tuple[int, ...]], ...] = (
        ("small", SMALL_HIDDEN),
        ("wide", WIDE_HIDDEN),
    )
    for kind, hidden in sized:
        say(f"training {kind} hub model", 0, 1)
        epochs = recipe.hub_epochs // 2 if kind == "wide" else recipe.hub_epochs
        sized_recipe = replace(recipe, hub_hidden=hidden, hub_epochs=max(1, epochs))
        clf = fit_hub(wire_train, y_train, num_classes, seed=seed, recipe=sized_recipe)
        models.append(_Model(kind, kind, clf, all_classes, "all", f"hub_{kind}.onnx"))
    for group, classes in groups.items():
        say(f"training specialist {group}", 0, 1)
        inside = np.isin(y_train, classes)
        remap = np.full(num_classes, -1, np.int64)
        remap[list(classes)] = np.arange(len(classes))
        clf = fit_hub(
            wire_train[inside], remap[y_train[inside]], len(classes), seed=seed, recipe=recipe
        )
        name = f"specialist-{group}"
        models.append(_Model(name, "specialist", clf, classes, group, f"hub_{name}.onnx"))
    return models


def _export(
    models: list[_Model], model_id: str, wire_cal: F32, y_cal: I64, base_price: float
) -> tuple[NetworkBuild, dict[str, F32]]:
    """ONNX files checked against the weights, prices, calibration accuracies; and each
    model's outputs on the calibration split."""
    build = NetworkBuild(files={})
    outputs: dict[str, F32] = {}
    generalist_macs = macs_of(models[0].classifier)
    for m in models:
        data = serialize(
            classifier_model(m.classifier, f"{model_id}-{m.name}", f"hub network: {m.kind}")
        )
        outputs[m.name] = _run(_session(data), wire_cal)
        error = float(np.abs(outputs[m.name] - m.classifier.probabilities(wire_cal)).max())
        if not error <= EXPORT_TOLERANCE:
            raise BuildError(f"{m.name}: onnxruntime differs from the weights by {error:.2e}")
        if m.kind != "generalist":
            build.files[m.file] = data
        if m.kind == "specialist":
            inside = np.isin(y_cal, m.classes)
            pred = np.asarray(m.classes)[outputs[m.name][inside].argmax(axis=1)]
            accuracy = float((pred == y_cal[inside]).mean()) if inside.any() else 0.0
        else:
            accuracy = float((outputs[m.name].argmax(axis=1) == y_cal).mean())
        macs = macs_of(m.classifier)
        build.entries.append((m, macs, base_price * macs / generalist_macs, accuracy))
    return build, outputs


def fit_network(
    *,
    model_id: str,
    dataset_slug: str,
    recipe: Recipe,
    hub: Classifier,
    hub_file: str,
    train_embedding: F32,
    y_train: I64,
    cal_embedding: F32,
    cal_local: F32,
    y_cal: I64,
    seed: int,
    base_price: float = 1.0,
    step: Callable[[str, int, int], None] | None = None,
) -> NetworkBuild:
    """Train and export the network's extra models, fit the arms' pooling and the router."""
    say = step or (lambda _d, _i, _n: None)
    groups = class_groups(dataset_slug, hub.num_classes, cal_local.argmax(axis=1), y_cal)
    models = _train(
        recipe=recipe,
        hub=hub,
        hub_file=hub_file,
        groups=groups,
        wire_train=wire_round(train_embedding),
        y_train=y_train,
        seed=seed,
        say=say,
    )
    wire_cal = wire_round(cal_embedding)
    build, outputs = _export(models, model_id, wire_cal, y_cal, base_price)

    say("fitting fusion and the meta-router", 0, 1)
    # The hard inputs: what devices escalate.
    hard = np.argsort(cal_local.max(axis=1), kind="stable")[: max(1, int(HARD_SHARE * len(y_cal)))]
    local, y_hard = cal_local[hard], y_cal[hard]
    hard_outputs = {name: out[hard] for name, out in outputs.items()}
    specialists = [(m.classes, hard_outputs[m.name]) for m in models if m.kind == "specialist"]
    correct = []
    for arm in ARMS:
        if SPECIALIST in arm and not specialists:
            continue
        sources = arm_sources(arm, local, hard_outputs, specialists)
        weights = fit_pooling_weights(sources, y_hard)
        name = "+".join(arm)
        build.arms.append(NetworkArm(name=name, models=arm, weights=weights))
        right = pool(sources, weights).argmax(axis=1) == y_hard
        build.arm_accuracy[name] = float(right.mean())
        correct.append(right)
    prior = RouterPrior.fit(features(local, wire_cal[hard]), np.stack(correct, axis=1))
    build.files[ROUTER_FILE] = prior.to_bytes()
    say("fitting fusion and the meta-router", 1, 1)
    return build
