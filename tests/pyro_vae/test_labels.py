"""pyro_vae.labels: balanced labelled subsets (reproducible, training rows only) and labels through every loader."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae import load_dataset
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.labels import UNLABELLED, class_labels, labelled_rows, semi_supervised


def rows_with_ids(tmp_path: Path, n: int = 300, classes: int = 4) -> Path:
    """An .npz whose first feature is the row's id (unique), labels y = id mod classes."""
    ids = np.arange(n, dtype=np.float64)
    x = np.column_stack([ids, np.random.default_rng(0).random((n, 3))])
    path = tmp_path / "ids.npz"
    np.savez(path, x=x, y=(ids % classes).astype(np.int64))
    return path


def test_the_draw_is_balanced_reproducible_and_only_takes_training_rows(tmp_path):
    data = load_dataset(rows_with_ids(tmp_path), val_fraction=0.2, test_fraction=0.2, seed=3)
    semi = semi_supervised(data, 22, seed=5)
    kept = labelled_rows(semi)
    assert len(kept) == 22
    counts = torch.bincount(semi.train_labels[kept], minlength=4)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 22  # 22 = 4 x 5 + 2: two classes get one more
    assert torch.equal(semi.train_labels[kept], data.train_labels[kept])  # the kept labels are the true ones
    assert int((semi.train_labels == UNLABELLED).sum()) == len(data.train) - 22
    ids = set(semi.train[kept, 0].long().tolist())
    held_out = set(data.val[:, 0].long().tolist()) | set(data.test[:, 0].long().tolist())
    assert not ids & held_out  # never a validation or test row
    assert torch.equal(semi.val_labels, data.val_labels) and torch.equal(semi.test_labels, data.test_labels)
    assert torch.equal(semi.test, data.test)
    again = semi_supervised(data, 22, seed=5)
    assert torch.equal(labelled_rows(again), kept)
    assert not torch.equal(labelled_rows(semi_supervised(data, 22, seed=6)), kept)


def test_labels_come_through_the_csv_and_idx_loaders(tmp_path):
    csv = tmp_path / "rows.csv"
    rows = ["a,b,label"] + [f"{i / 40},{(i % 7) / 7},{i % 3}" for i in range(40)]
    csv.write_text("\n".join(rows) + "\n")
    data = load_dataset(csv, val_fraction=0.25, test_fraction=0.25)
    assert data.feature_dim == 2 and set(data.train_labels.tolist()) <= {0, 1, 2}
    semi = semi_supervised(data, 6, seed=0)
    assert torch.bincount(semi.train_labels[labelled_rows(semi)], minlength=3).tolist() == [2, 2, 2]

    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 2, 2), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": np.arange(30, dtype=np.uint8) % 3,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 2, 2), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": np.arange(4, dtype=np.uint8) % 3}
    for name, arr in arrays.items():  # IDX: magic 0x08 (uint8) | ndim, big-endian sizes, raw values
        header = struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (folder / name).write_bytes(gzip.compress(header + arr.tobytes()))
    mnist = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.2)
    semi = semi_supervised(mnist, 3, num_classes=3, seed=0)
    assert sorted(semi.train_labels[labelled_rows(semi)].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 1, np.nan, 2]), r"labels holds 1 NaN/infinite label\(s\) \(first at row 2\)"),
    (np.array([0, 1, 2]), r"labels has shape \(3,\); expected one label per row, i\.e\. \(4,\)"),
    (np.array([0, -1, 2, 1]), r"labels holds the negative label -1 at row 1"),
    (np.array([0, 1.5, 2, 1]), r"integer class labels 0\.\.C-1, got 1\.5 at row 1"),
])
def test_bad_label_arrays_get_one_line_naming_the_problem(labels, match):
    with pytest.raises(DataError, match=match):
        class_labels(labels, 4)


def test_too_few_labels_and_labels_outside_the_classes_are_refused(tmp_path):
    data = load_dataset(rows_with_ids(tmp_path), val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ConfigError, match=r"labels must be an integer >= the number of classes \(4"):
        semi_supervised(data, 3)
    with pytest.raises(DataError, match=r"train_labels holds the label 3, outside the 3 classes 0\.\.2"):
        semi_supervised(data, 6, num_classes=3)
    with pytest.raises(DataError, match=r"asks for \d+ labelled rows of class \d, but the training split has only"):
        semi_supervised(load_dataset(rows_with_ids(tmp_path), max_train=12), 12)
