"""Dataset loading: IDX parsing, Fashion-MNIST from its Debian package, npz and csv files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from escalade.modelbuild import datasets
from escalade.modelbuild.datasets import DatasetError, load_dataset
from escalade.modelbuild.idx import IdxError, parse_idx, read_idx
from escalade.modelbuild.train import split_dataset

needs_fashion = pytest.mark.skipif(
    not datasets.FASHION_MNIST_DIR.is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    return header + big_endian.tobytes()


def test_idx_parses_uint8_images_from_gzip(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    parsed = read_idx(path)
    assert parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, images)


def test_idx_reads_big_endian_integers_and_plain_files(tmp_path: Path) -> None:
    values = np.array([1, -2, 70000], dtype=np.int32)
    path = tmp_path / "values.idx"
    path.write_bytes(idx_bytes(values, 0x0C))
    parsed = read_idx(path)
    assert parsed.dtype == np.dtype("int32")
    np.testing.assert_array_equal(parsed, values)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "implies"),
    ],
)
def test_idx_refuses_malformed_data(data: bytes, message: str) -> None:
    with pytest.raises(IdxError, match=message):
        parse_idx(data)


def test_idx_refuses_a_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(IdxError, match="gzip"):
        read_idx(path)


def fake_fashion(directory: Path, train: int = 30, test: int = 10) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 3).astype(np.uint8)
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def test_fashion_mnist_keeps_the_official_test_split_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_fashion(tmp_path)
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path)
    data = load_dataset("fashion-mnist")
    assert data.X.shape == (30, 784)
    assert data.X.dtype == np.float32
    assert data.X_test is not None
    assert data.y_test is not None
    assert data.X_test.shape == (10, 784)
    assert data.y_test.dtype == np.int64
    assert data.num_classes == 3
    split = split_dataset(data, seed=0)
    # The calibration split is carved from the training part; the test split is the official one.
    assert len(split.X_cal) == 30 // 4
    assert len(split.X_train) == 30 - 30 // 4
    np.testing.assert_array_equal(split.X_test, data.X_test)


def test_fashion_mnist_missing_says_which_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_fashion_mnist_with_mismatched_files_is_a_dataset_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_fashion(tmp_path)
    labels = np.zeros(7, dtype=np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(DatasetError, match="t10k"):
        load_dataset("fashion-mnist")


@needs_fashion
def test_installed_fashion_mnist_loads() -> None:
    data = load_dataset("fashion-mnist")
    assert data.X.shape == (60000, 784)
    assert data.num_classes == 10
    assert data.X_test is not None
    assert data.X_test.shape == (10000, 784)
    assert data.X.min() >= 0.0
    assert data.X.max() <= 255.0
    assert np.bincount(data.y).tolist() == [6000] * 10


def test_npz_labels_are_remapped_to_consecutive_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = np.repeat([7, -1, 3], 10)
    path = tmp_path / "data.npz"
    np.savez(path, X=x, y=y)
    data = load_dataset(f"npz:{path}")
    assert data.name == f"npz:{path}"
    assert data.X.dtype == np.float32
    assert data.input_dim == 4
    assert data.y.tolist() == [2] * 10 + [0] * 10 + [1] * 10
    assert data.X_test is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.zeros((10, 2))}, "missing array.*y"),
        ({"X": np.zeros(10), "y": np.arange(10) % 2}, r"expected X \[N, D\]"),
        ({"X": np.zeros((10, 2)), "y": np.arange(10) * 0.5}, "labels must be integers"),
        ({"X": np.full((10, 2), np.nan), "y": np.arange(10) % 2}, "NaN"),
        ({"X": np.zeros((10, 2)), "y": np.zeros(10)}, "C >= 2"),
        ({"X": np.array([["a", "b"]] * 10), "y": np.arange(10) % 2}, "numeric"),
    ],
)
def test_malformed_npz_is_a_dataset_error(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"npz:{path}")


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    path.write_text("hello")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(f"npz:{path}")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_csv_with_a_label_column_anywhere(tmp_path: Path) -> None:
    rows = [f"{i},{i % 2 * 10},{-i}" for i in range(12)]
    path = tmp_path / "data.csv"
    path.write_text("a,label,b\n" + "\n".join(rows) + "\n")
    data = load_dataset(f"csv:{path}")
    assert data.X.shape == (12, 2)
    assert data.X[3].tolist() == [3.0, -3.0]
    assert data.y.tolist() == [0, 1] * 6


def test_csv_without_header_takes_the_last_column(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("\n".join(f"{i}.5,{i},{i % 2}" for i in range(10)))
    data = load_dataset(f"csv:{path}")
    assert data.X.shape == (10, 2)
    assert data.y.tolist() == [0, 1] * 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("a,b\n1,x\n", "numeric"),
        ("a,b\n1,2\n3\n", "same 2"),
        ("label\n1\n2\n", ">= 2"),
    ],
)
def test_malformed_csv_is_a_dataset_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{path}")


def test_unknown_names_list_every_accepted_form() -> None:
    with pytest.raises(DatasetError, match=r"digits, fashion-mnist, csv:PATH, npz:PATH"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="no path"):
        load_dataset("csv:")


def test_max_train_keeps_a_stratified_subset() -> None:
    data = load_dataset("digits")
    split = split_dataset(data, seed=0, max_train=200)
    assert len(split.X_train) == 200
    assert set(split.y_train.tolist()) == set(range(10))
    assert len(split.X_test) == 360  # calibration and test splits are unchanged
