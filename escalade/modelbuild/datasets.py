"""Datasets the builder trains on, loaded as float32 features and int64 labels.

Only datasets that ship with an installed package are supported: a build never downloads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# A stratified 60/20/20 split needs a few examples of every class in every part.
MIN_EXAMPLES_PER_CLASS = 5


class DatasetError(Exception):
    """The dataset is unknown or unusable for a bundle."""


@dataclass(frozen=True)
class Dataset:
    name: str
    X: NDArray[np.float32]  # [N, D]
    y: NDArray[np.int64]  # [N], classes 0 .. num_classes - 1

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


def _validated(name: str, X: NDArray[np.generic], y: NDArray[np.generic]) -> Dataset:
    features = np.ascontiguousarray(X, dtype=np.float32)
    labels = np.ascontiguousarray(y, dtype=np.int64)
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
    return Dataset(name=name, X=features, y=labels)


def _digits() -> Dataset:
    # Bundled with scikit-learn: 1797 8x8 images, pixel values 0..16, 10 classes.
    from sklearn.datasets import load_digits

    data = load_digits()
    return _validated("digits", data.data, data.target)


_LOADERS: dict[str, Callable[[], Dataset]] = {"digits": _digits}

SUPPORTED_DATASETS: tuple[str, ...] = tuple(sorted(_LOADERS))


def load_dataset(name: str) -> Dataset:
    loader = _LOADERS.get(name)
    if loader is None:
        raise DatasetError(f"unknown dataset {name!r}; supported: {', '.join(SUPPORTED_DATASETS)}")
    return loader()
