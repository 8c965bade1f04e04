"""Build a model bundle: edge encoder and head, hub model, router threshold, calibration stats.

Needs the `models` extra (scikit-learn, onnx); nothing else in Escalade imports this package.
"""

from escalade.modelbuild.bundle import StepCallback, build_bundle
from escalade.modelbuild.datasets import SUPPORTED_DATASETS, Dataset, DatasetError, load_dataset
from escalade.modelbuild.train import BuildError

__all__ = [
    "SUPPORTED_DATASETS",
    "BuildError",
    "Dataset",
    "DatasetError",
    "StepCallback",
    "build_bundle",
    "load_dataset",
]
