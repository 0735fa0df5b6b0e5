r"""Class labels for semi-supervised learning: checked label arrays and a balanced labelled subset.

A semi-supervised data set is a :class:`~pyro_vae.data.DataSplits` whose ``train_labels`` hold
the class of the n labelled training rows and :data:`UNLABELLED` (-1) for the others; the
validation labels are kept (the labelled validation split early stopping reads) and the test
split is untouched. :func:`semi_supervised` draws the labelled rows balanced over the C classes:

    n_c = floor(n / C) rows of every class c, plus one more row for (n mod C) classes drawn with ``seed``,

each class's rows drawn uniformly without replacement with the same ``seed`` (numpy's
``default_rng``), so a draw is reproducible and only ever chooses training rows (never a
validation or test row). Labels come through the ordinary loaders: ``.npz`` with ``y``/``labels``
(or ``train_labels`` ...), the IDX label files of MNIST, a CSV column named ``label``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyro_vae.checks import got, integer, seed as check_seed
from pyro_vae.errors import ConfigError, DataError

if TYPE_CHECKING:  # data.py imports this module: no import cycle at run time
    from pyro_vae.data import DataSplits

UNLABELLED = -1  # train_labels value of a row whose label is hidden


def class_labels(y: Any, n: int, name: str = "labels") -> torch.Tensor:
    """One integer class label >= 0 per row, as int64 (n,): DataError for another length, NaN, non-integers or negatives."""
    arr = y.detach().cpu().numpy() if torch.is_tensor(y) else np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{name} has shape {arr.shape}; expected one label per row, i.e. ({n},): "
                        "give the labels of exactly the data's rows")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must hold integer class labels 0..C-1, got dtype {arr.dtype}; convert them first")
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DataError(f"{name} holds {bad.size} NaN/infinite label(s) (first at row {int(bad[0])}); a label column "
                            "must be complete: drop those rows, or leave the label out for unlabelled data")
        if not np.all(arr == np.round(arr)):
            row = int(np.flatnonzero(arr != np.round(arr))[0])
            raise DataError(f"{name} must hold integer class labels 0..C-1, got {float(arr[row]):g} at row {row}")
    if arr.size and arr.min() < 0:
        row = int(np.argmin(arr))
        raise DataError(f"{name} holds the negative label {int(arr[row])} at row {row}; class labels are 0..C-1")
    return torch.from_numpy(arr.astype(np.int64))


def check_label_range(labels: torch.Tensor, num_classes: int, name: str) -> None:
    """DataError naming the first label of ``labels`` outside 0..num_classes-1 (UNLABELLED rows aside)."""
    known = labels[labels != UNLABELLED]
    if known.numel() and (int(known.min()) < 0 or int(known.max()) >= num_classes):
        bad = int(known[(known < 0) | (known >= num_classes)][0])
        raise DataError(f"{name} holds the label {bad}, outside the {num_classes} classes 0..{num_classes - 1}; "
                        f"set the number of classes (model.program classes) to at least {int(known.max()) + 1}, "
                        "or relabel the data 0..C-1")


def balanced_draw(labels: torch.Tensor, n_labels: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices (sorted) of ``n_labels`` rows balanced over the classes (module docstring); DataError if a class is short."""
    rng = np.random.default_rng(seed)
    quota = np.full(num_classes, n_labels // num_classes)
    quota[rng.permutation(num_classes)[: n_labels % num_classes]] += 1
    y = labels.numpy()
    chosen = []
    for c in range(num_classes):
        rows = np.flatnonzero(y == c)
        if rows.size < quota[c]:
            raise DataError(f"labels={n_labels} asks for {quota[c]} labelled rows of class {c}, but the training split "
                            f"has only {rows.size}; ask for at most {num_classes * int(np.bincount(y, minlength=num_classes).min())} "
                            "labels, or use more training rows (data.max_train)")
        chosen.append(rng.choice(rows, size=int(quota[c]), replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


def semi_supervised(data: "DataSplits", n_labels: int, *, num_classes: int | None = None, seed: int = 0) -> "DataSplits":
    """``data`` with the labels of all but ``n_labels`` balanced training rows hidden (set to :data:`UNLABELLED`).

    ``num_classes`` C defaults to 1 + the largest label of any split; ``n_labels`` must be at least
    C (one row per class). The validation labels are kept and the test split is untouched.
    Raises DataError for data without training or validation labels, a label outside 0..C-1, or a
    class with fewer training rows than its share; ConfigError for a bad ``n_labels``/``seed``.
    """
    if data.train_labels is None or data.val_labels is None:
        missing = "train" if data.train_labels is None else "validation"
        raise DataError(f"{data.name} has no {missing} labels; semi-supervised training needs labels: store them as "
                        "'y' in an .npz, a 'label' column in a .csv, or use digits/mnist")
    if data.val.shape[0] == 0:
        raise DataError(f"{data.name} has no validation rows; semi-supervised training stops early on labelled "
                        "validation rows: set data.val_fraction > 0")
    known = [y for y in (data.train_labels, data.val_labels, data.test_labels) if y is not None and y.numel()]
    top = max(int(y.max()) for y in known) + 1
    classes = top if num_classes is None else integer("num_classes", num_classes, minimum=2)
    if classes < 2:
        raise DataError(f"{data.name} has a single class ({top - 1}); classification needs at least 2")
    for split, y in (("train", data.train_labels), ("val", data.val_labels), ("test", data.test_labels)):
        if y is not None:
            check_label_range(y, classes, f"{split}_labels")
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < classes:
        raise ConfigError(f"labels must be an integer >= the number of classes ({classes}: one labelled row per class), "
                          f"{got(n_labels)}; e.g. labels={10 * classes}")
    if n_labels > data.train.shape[0]:
        raise ConfigError(f"labels={n_labels} is more than the {data.train.shape[0]} training rows; ask for fewer")
    check_seed("seed", seed)
    keep = balanced_draw(data.train_labels, n_labels, classes, seed)
    hidden = torch.full_like(data.train_labels, UNLABELLED)
    hidden[keep] = data.train_labels[keep]
    return dataclasses.replace(data, train_labels=hidden)


def labelled_rows(data: "DataSplits") -> torch.Tensor:
    """Indices of the training rows whose label is known (empty without labels)."""
    if data.train_labels is None:
        return torch.zeros(0, dtype=torch.long)
    return (data.train_labels != UNLABELLED).nonzero().flatten()


__all__ = ["UNLABELLED", "class_labels", "check_label_range", "balanced_draw", "semi_supervised", "labelled_rows"]
