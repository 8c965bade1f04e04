"""Datasets the builder trains on, loaded as float32 features and int64 labels.

A build never downloads. Accepted names: ``digits`` (bundled with scikit-learn),
``fashion-mnist`` (the Debian package ``dataset-fashion-mnist``), ``npz:PATH`` (arrays ``X``
[N, D] and ``y`` [N]) and ``csv:PATH`` (numeric columns; the label is the column named
``label``, else the last one). Labels of files are remapped to 0 .. C-1 in sorted order.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from escalade.modelbuild.idx import IdxError, read_idx

# A stratified 60/20/20 split needs a few examples of every class in every part.
MIN_EXAMPLES_PER_CLASS = 5

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


class DatasetError(Exception):
    """The dataset is unknown or unusable for a bundle."""


@dataclass(frozen=True)
class Dataset:
    name: str
    X: F32  # [N, D]
    y: I64  # [N], classes 0 .. num_classes - 1
    # The dataset's official test split, when it has one; X and y then hold the rest.
    X_test: F32 | None = None
    y_test: I64 | None = None

    @property
    def input_dim(self) -> int:
        return int(self.X.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1

    @property
    def slug(self) -> str:
        """The name reduced to what a manifest model_id allows."""
        slug = re.sub(r"[^a-z0-9._-]+", "-", self.name.lower()).strip("-._")
        return slug[:40] or "dataset"


def _labels(name: str, y: NDArray[np.generic]) -> I64:
    if y.dtype.kind == "f":
        values = y.astype(np.float64)
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise DatasetError(f"{name}: labels must be integers")
    elif y.dtype.kind not in "iub":
        raise DatasetError(f"{name}: labels must be integers, got dtype {y.dtype}")
    return np.ascontiguousarray(y, dtype=np.int64)


def _validated(
    name: str,
    X: NDArray[np.generic],
    y: NDArray[np.generic],
    test: tuple[NDArray[np.generic], NDArray[np.generic]] | None = None,
) -> Dataset:
    features = np.ascontiguousarray(X, dtype=np.float32)
    labels = _labels(name, y)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise DatasetError(
            f"{name}: expected X [N, D] and y [N], got {features.shape} and {labels.shape}"
        )
    if not np.isfinite(features).all():
        raise DatasetError(f"{name}: features contain NaN or infinity")
    counts = np.bincount(labels) if labels.size and labels.min() >= 0 else np.array([])
    if counts.size < 2 or (counts == 0).any():
        raise DatasetError(f"{name}: labels must be 0 .. C-1 with C >= 2 and every class present")
    if counts.min() < MIN_EXAMPLES_PER_CLASS:
        raise DatasetError(
            f"{name}: class {int(counts.argmin())} has {int(counts.min())} examples, "
            f"at least {MIN_EXAMPLES_PER_CLASS} are needed"
        )
    if test is None:
        return Dataset(name=name, X=features, y=labels)
    X_test = np.ascontiguousarray(test[0], dtype=np.float32)
    y_test = _labels(name, test[1])
    if X_test.ndim != 2 or X_test.shape[1] != features.shape[1] or y_test.shape != (len(X_test),):
        raise DatasetError(f"{name}: test split {X_test.shape}, {y_test.shape} does not match")
    if y_test.size == 0 or y_test.min() < 0 or y_test.max() >= counts.size:
        raise DatasetError(f"{name}: test labels outside 0 .. {counts.size - 1}")
    return Dataset(name=name, X=features, y=labels, X_test=X_test, y_test=y_test)


def _remapped(name: str, X: NDArray[np.generic], y: NDArray[np.generic]) -> Dataset:
    """User files may label classes anyhow (1..C, 3/7, -1/1): number them 0 .. C-1."""
    labels = _labels(name, y)
    if labels.ndim != 1:
        raise DatasetError(f"{name}: y must be one-dimensional, got shape {labels.shape}")
    _, dense = np.unique(labels, return_inverse=True)
    return _validated(name, X, dense.reshape(-1))


def _digits() -> Dataset:
    # Bundled with scikit-learn: 1797 8x8 images, pixel values 0..16, 10 classes.
    from sklearn.datasets import load_digits

    data = load_digits()
    return _validated("digits", data.data, data.target)


def _fashion_mnist() -> Dataset:
    """28x28 greyscale pixels 0..255 as 784 features; the official 10k test split kept apart."""
    if not FASHION_MNIST_DIR.is_dir():
        raise DatasetError(
            f"fashion-mnist: {FASHION_MNIST_DIR} not found; "
            "install it with `apt-get install dataset-fashion-mnist` (nothing is downloaded)"
        )

    def part(prefix: str) -> tuple[NDArray[np.generic], NDArray[np.generic]]:
        images = read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"fashion-mnist {prefix}: images {images.shape} and labels {labels.shape}"
            )
        return images.reshape(len(images), -1), labels

    try:
        X, y = part("train")
        X_test, y_test = part("t10k")
    except (IdxError, OSError) as exc:
        raise DatasetError(f"fashion-mnist: {exc}") from exc
    return _validated("fashion-mnist", X, y, (X_test, y_test))


def _npz(path: Path) -> Dataset:
    name = f"npz:{path}"
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"X", "y"} - set(data.files)
            if missing:
                raise DatasetError(f"{name}: missing array(s) {', '.join(sorted(missing))}")
            X, y = data["X"], data["y"]
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{name}: cannot read: {exc}") from exc
    if X.dtype.kind not in "iufb":
        raise DatasetError(f"{name}: X must be numeric, got dtype {X.dtype}")
    return _remapped(name, X, y)


def _csv(path: Path) -> Dataset:
    name = f"csv:{path}"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{name}: cannot read: {exc}") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"{name}: empty file")
    first = [cell.strip().strip('"') for cell in lines[0].split(",")]
    has_header = not all(_is_number(cell) for cell in first)
    label_column = first.index("label") if has_header and "label" in first else len(first) - 1
    rows = [row.split(",") for row in (lines[1:] if has_header else lines)]
    if len(first) < 2 or any(len(row) != len(first) for row in rows):
        raise DatasetError(
            f"{name}: every row needs the same {len(first)} (>= 2) columns, one of them the label"
        )
    try:
        table = np.array([[float(c) for c in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"{name}: every value must be numeric: {exc}") from exc
    table = table.reshape(len(rows), len(first))
    features = np.delete(table, label_column, axis=1)
    return _remapped(name, features, table[:, label_column])


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


_LOADERS: dict[str, Callable[[], Dataset]] = {
    "digits": _digits,
    "fashion-mnist": _fashion_mnist,
}
_FILE_LOADERS: dict[str, Callable[[Path], Dataset]] = {"npz": _npz, "csv": _csv}

SUPPORTED_DATASETS: tuple[str, ...] = (
    *sorted(_LOADERS),
    *(f"{kind}:PATH" for kind in sorted(_FILE_LOADERS)),
)


def load_dataset(name: str) -> Dataset:
    """Load a named dataset or a file given as ``npz:PATH`` / ``csv:PATH``."""
    kind, sep, path = name.partition(":")
    if sep and kind in _FILE_LOADERS:
        if not path:
            raise DatasetError(f"{name!r}: no path after {kind}:")
        return _FILE_LOADERS[kind](Path(path).expanduser())
    loader = _LOADERS.get(name)
    if loader is None:
        raise DatasetError(f"unknown dataset {name!r}; supported: {', '.join(SUPPORTED_DATASETS)}")
    return loader()
