"""The demo's task graph: a gate over class groups and one specialist head per group, trained
on the bundle's own embeddings, exported to ONNX and described by a graph spec (TOML) whose
files are named by their SHA-256.

The worked graph (`edge_agent/graphs/spec.py` for the format)::

    input -> embed (encoder) -> gate (the bundle's head; exits when its top probability
    reaches the router's calibrated threshold, so it answers exactly what the cascade answers
    locally)
                             -> groups (which group: e.g. digits {0,6,8,9} {1,4,7} {2,3,5},
                                Fashion-MNIST tops / footwear / trousers-dresses-bags)
                             -> one specialist per group (trained on that group's examples)
          groups + specialists -> mix (p(group) * p(class | group); routed: the router may
                                  send it to the hub, like the cascade's uncertain inputs)

The groups and specialists are independent branches of one stage: the executor runs them in
threads when that measured faster, in sequence otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from escalade.modelbuild.datasets import load_dataset
from escalade.modelbuild.evaluate import OnnxRunner
from escalade.modelbuild.files import write_atomic
from escalade.modelbuild.onnx_export import classifier_model, serialize
from escalade.modelbuild.train import (
    BuildError,
    Classifier,
    fit_head,
    fit_temperature,
    recipe_for,
    split_dataset,
)
from escalade_protocol.artifacts import ModelManifest, load_manifest, sha256_file, verified_path

GRAPH_DIR = "graph"
SPEC_FILE = "graph.toml"
Groups = tuple[tuple[int, ...], ...]
# Class groups by what a crop shows; digits by shape families the head confuses within.
GROUPS: dict[str, Groups] = {
    "digits": ((0, 6, 8, 9), (1, 4, 7), (2, 3, 5)),
    # Fashion-MNIST: tops (T-shirt, pullover, coat, shirt), footwear (sandal, sneaker, ankle
    # boot), the rest (trouser, dress, bag).
    "fashion-mnist": ((0, 2, 4, 6), (5, 7, 9), (1, 3, 8)),
}
EXPORT_TOLERANCE = 1e-4


def default_groups(dataset: str, num_classes: int) -> Groups:
    if dataset in GROUPS:
        return GROUPS[dataset]
    # Any other dataset: three contiguous runs of classes.
    chunks = np.array_split(np.arange(num_classes), min(3, num_classes // 2))
    return tuple(tuple(int(c) for c in chunk) for chunk in chunks)


def _export(classifier: Classifier, name: str, doc: str, check: np.ndarray) -> bytes:
    model = serialize(classifier_model(classifier, name, doc))
    onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"embedding": check})
    error = float(np.abs(np.asarray(got) - classifier.probabilities(check)).max())
    if not error <= EXPORT_TOLERANCE:
        raise BuildError(f"{name}: onnxruntime output differs from the weights by {error:.2e}")
    return model


def _spec(
    manifest: ModelManifest, groups: Groups, digests: dict[str, str], threshold: float
) -> str:
    """The spec's TOML; `digests` maps each model name to its file's SHA-256."""

    def ints(values: tuple[int, ...]) -> str:
        return "[" + ", ".join(str(v) for v in values) + "]"

    lines = [
        "# The demo's task graph (escalade/modelbuild/graph_heads.py): a confident gate, then a",
        "# gate over class groups and one specialist per group, mixed; the mixture may go to the",
        "# hub when the router finds it uncertain.",
        f'name = "{manifest.model_id}-graph"',
        "version = 1",
        'output = "mix"',
        'parallel = "auto"',
        "",
        "[models.groups]",
        'path = "groups.onnx"',
        f'sha256 = "{digests["groups"]}"',
        'gives = "groups"',
        "groups = [" + ", ".join(ints(g) for g in groups) + "]",
    ]
    for i, group in enumerate(groups):
        lines += [
            "",
            f"[models.group{i}]",
            f'path = "group{i}.onnx"',
            f'sha256 = "{digests[f"group{i}"]}"',
            'gives = "probabilities"',
            f"classes = {ints(group)}",
        ]
    nodes = [
        ("embed", 'model = "encoder"\ninputs = ["input"]'),
        ("gate", f'model = "head"\ninputs = ["embed"]\nexit_threshold = {threshold!r}'),
        ("groups", 'model = "groups"\ninputs = ["embed"]'),
        *((f"group{i}", f'model = "group{i}"\ninputs = ["embed"]') for i in range(len(groups))),
        (
            "mix",
            'gate = "groups"\nexperts = ['
            + ", ".join(f'"group{i}"' for i in range(len(groups)))
            + ']\nroute = "auto"',
        ),
    ]
    for node_id, body in nodes:
        lines += ["", "[[nodes]]", f'id = "{node_id}"', body]
    return "\n".join(lines) + "\n"


def build_graph(
    bundle_dir: Path, *, dataset: str | None = None, groups: Groups | None = None
) -> Path:
    """Train the gate and specialists on the bundle's embeddings; write graph/ and its spec.

    Returns the spec's path (bundle_dir/graph/graph.toml). Deterministic for a bundle.
    """
    manifest = load_manifest(bundle_dir)
    data = load_dataset(dataset or manifest.dataset)
    groups = groups or default_groups(data.slug, data.num_classes)
    split = split_dataset(data, manifest.seed)
    recipe = recipe_for(data)
    encoder = verified_path(bundle_dir, manifest.encoder).read_bytes()
    head = verified_path(bundle_dir, manifest.head).read_bytes()
    hub = verified_path(bundle_dir, manifest.hub).read_bytes()
    runner = OnnxRunner(encoder, head, hub)
    train, cal = runner.embed(split.X_train), runner.embed(split.X_cal)
    group_of = np.full(data.num_classes, -1, dtype=np.int64)
    for g, members in enumerate(groups):
        group_of[list(members)] = g

    def fitted(x: np.ndarray, y: np.ndarray, xc: np.ndarray, yc: np.ndarray, k: int) -> Classifier:
        head = fit_head(x, y, recipe=recipe, num_classes=k, seed=manifest.seed)
        return head.with_temperature(fit_temperature(head, xc, yc))

    keep = group_of[split.y_train] >= 0
    keep_cal = group_of[split.y_cal] >= 0
    models = {
        "groups": fitted(
            train[keep],
            group_of[split.y_train[keep]],
            cal[keep_cal],
            group_of[split.y_cal[keep_cal]],
            len(groups),
        )
    }
    for g, members in enumerate(groups):
        index = {c: i for i, c in enumerate(members)}
        rows, rows_cal = group_of[split.y_train] == g, group_of[split.y_cal] == g
        models[f"group{g}"] = fitted(
            train[rows],
            np.asarray([index[int(c)] for c in split.y_train[rows]], dtype=np.int64),
            cal[rows_cal],
            np.asarray([index[int(c)] for c in split.y_cal[rows_cal]], dtype=np.int64),
            len(members),
        )
    out = bundle_dir / GRAPH_DIR
    out.mkdir(exist_ok=True)
    digests: dict[str, str] = {}
    for name, classifier in models.items():
        doc = "gate over class groups" if name == "groups" else f"specialist for {name}"
        content = _export(classifier, f"{manifest.model_id}-{name}", doc, cal[:64])
        write_atomic(out / f"{name}.onnx", content)
        # Paths in the spec are relative to the spec's folder.
        digests[name] = sha256_file(out / f"{name}.onnx")
    spec = out / SPEC_FILE
    write_atomic(spec, _spec(manifest, groups, digests, manifest.router.threshold).encode())
    return spec
