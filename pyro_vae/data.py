"""Datasets for the VAE: load, check, split, binarize and batch.

Every loader returns a :class:`DataSplits` of float32 tensors shaped ``(N, D)`` (images flattened in C order;
``image_shape`` remembers ``(H, W)``). Formats understood:

* ``"digits"``: scikit-learn's bundled 8x8 digits (1797 images, pixels 0..16, scaled /16).
* ``"mnist"`` / ``"fashion-mnist"``: the original IDX files (``train-images-idx3-ubyte.gz`` ...).
  IDX is a big-endian binary format: two zero bytes, a dtype code (0x08 = uint8), the number of
  dimensions, one uint32 per dimension, then the raw values; images have magic 2051, labels
  2049. Files may be gzip-compressed or not. Pixels are scaled /255. The official test set is
  the test split; the validation split is carved from train.
* ``"binarized-mnist"``: Larochelle & Murray's fixed binarization,
  ``binarized_mnist_{train,valid,test}.amat``, either as the original whitespace-separated text
  or as MATLAB 5 MAT-files holding a variable ``X`` (detected from the header bytes).
* A user file: ``.npy`` (``(N, D)`` or ``(N, H, W)``), ``.npz`` (key ``x``/``X``/``data`` plus
  optional ``y``/``labels``, or keys ``train`` and ``test``), ``.csv`` (numeric, optional header
  row; a header column named ``label`` holds labels). User values are not rescaled.

Built-in datasets are looked up in :func:`resolve_data_dir`: an explicit ``data_dir`` argument,
else the ``PYRO_VAE_DATA`` environment variable, else the user cache directory. Splits of features of raw
rows (M1+M2's M1 means) carry ``encode_rows(x, name)``: the same features of new raw rows (None: rows are features).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pyro_vae.checks import boolean, check_fractions, choice, got, optional_positive_int, path_like, seed as check_seed
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.labels import class_labels
from pyro_vae.idx import (  # noqa: F401 - the resources are re-exported: users and tests read them here
    FASHION_MNIST_RESOURCES, IDX_DATASETS as _IDX_DATASETS, IDX_MAGIC_IMAGES, IDX_MAGIC_LABELS, MNIST_RESOURCES,
    download_idx, file_md5, read_idx,
)

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "binarized-mnist")
STATIC_DATASETS: tuple[str, ...] = ("binarized-mnist",)  # shipped binarized: their binarization is fixed
FILE_EXTENSIONS: tuple[str, ...] = (".npy", ".npz", ".csv")
BINARIZE_MODES: tuple[str, ...] = ("none", "threshold", "static", "dynamic")
ENV_VAR = "PYRO_VAE_DATA"
MIN_TEST_ROWS = 2  # every score of the test split is a mean with a standard error (and active units a variance)

@dataclass(frozen=True)
class DataSplits:
    """Train/validation/test tensors of one dataset, each float32 ``(N, D)`` (``encode_rows``: module docstring)."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None
    val_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    image_shape: tuple[int, ...] | None
    binarize: str
    train_sd: torch.Tensor | None = None  # per-entry sd: training rows drawn as N(train, train_sd^2) per minibatch
    encode_rows: Callable[[torch.Tensor, str], torch.Tensor] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, split), getattr(self, f"{split}_labels")
            if x.ndim != 2 or x.shape[1] != self.train.shape[1]:
                raise DataError(f"{split} split has shape {tuple(x.shape)}; every split must be 2-D (N, D) "
                                f"with D = {self.train.shape[-1]}")
            if y is not None and y.shape != (x.shape[0],):
                raise DataError(f"{split}_labels has shape {tuple(y.shape)}; expected ({x.shape[0]},)")
        sd = self.train_sd
        if sd is not None and (sd.shape != self.train.shape or not bool(torch.isfinite(sd).all()) or bool((sd < 0).any())):
            raise DataError(f"train_sd must be finite, >= 0 and of the training rows' shape {tuple(self.train.shape)}, "
                            f"got shape {tuple(sd.shape)}; pass one sd per training entry, or None")
        if sd is not None and self.binarize == "dynamic":
            raise DataError("train_sd draws Gaussian training rows, binarize='dynamic' Bernoulli ones; use one of them")

    @property
    def feature_dim(self) -> int:
        """Number of features D of one (flattened) data point."""
        return int(self.train.shape[1])


def check_data_splits(data: object, name: str = "data") -> DataSplits:
    """``data`` if it is a :class:`DataSplits`, else DataError saying how to make one."""
    if not isinstance(data, DataSplits):
        raise DataError(
            f"{name} must be the splits of pyro_vae.data.load_dataset (a DataSplits), {got(data)}; "
            "save arrays as .npy/.npz/.csv and load them with load_dataset(PATH)"
        )
    return data


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Data folder: explicit argument > env ``PYRO_VAE_DATA`` > ``user_cache_dir('pyro-vae')``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("pyro-vae"))


# ----------------------------------------------------------------------------- checks
def validate_array(x: object, *, name: str = "data") -> torch.Tensor:
    """Check a user array and return it as a float32 tensor ``(N, D)``.

    Accepts bool/int/float dtypes, shaped ``(N, D)`` or ``(N, H, W)`` (flattened to ``H*W``
    features). Refuses object/string/complex dtypes, other ranks, empty arrays and NaN/inf.
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype.kind not in "biuf":
        kind = {"O": "Python objects", "U": "strings", "S": "bytes", "c": "complex numbers"}
        raise DataError(
            f"{name} has dtype {arr.dtype} ({kind.get(arr.dtype.kind, 'non-numeric values')}); "
            "a VAE needs real numbers: convert it first, e.g. np.asarray(x, dtype=np.float32)"
        )
    if arr.ndim == 3:
        logger.info("%s has shape %s; flattening each %dx%d image to %d features",
                    name, arr.shape, arr.shape[1], arr.shape[2], arr.shape[1] * arr.shape[2])
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2:
        raise DataError(
            f"{name} has shape {arr.shape} ({arr.ndim}-D); expected (N, D) rows of features or "
            "(N, H, W) images. For one feature use x.reshape(-1, 1); for one point x.reshape(1, -1)"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{name} is empty (shape {arr.shape}); it needs at least one row and column")
    with np.errstate(over="ignore"):  # overflow to inf is reported just below
        out = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    for bad, what in ((torch.isnan(out), "NaN"), (torch.isinf(out), "infinite")):
        count = int(bad.sum())
        if count:
            row, col = (int(i) for i in bad.nonzero()[0])
            raise DataError(
                f"{name} contains {count} {what} values (first at row {row}, column {col}); "
                "remove or impute them before training"
                + (" (values beyond +-3.4e38 overflow float32)" if what == "infinite" else "")
            )
    return out


def _check_options(source: object, data_dir: object, binarize: object, val_fraction: object, test_fraction: object,
                   seed: object, max_train: object, download: object) -> None:
    """The arguments of :func:`load_dataset`, checked once (ConfigError naming the bad one)."""
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        array = isinstance(source, (np.ndarray, torch.Tensor))
        raise ConfigError(f"source must be a dataset name ({', '.join(DATASETS)}) or a .npy/.npz/.csv path, {got(source)}"
                          + ("; to use an array, save it (np.save('x.npy', x)) and pass the path" if array else ""))
    path_like("data_dir", data_dir, optional=True)
    choice("binarize", binarize, BINARIZE_MODES)
    check_fractions(val_fraction, test_fraction)
    check_seed("seed", seed)
    optional_positive_int("max_train", max_train)
    boolean("download", download)


def _check_split_sizes(name: str, parts: list[tuple[torch.Tensor, torch.Tensor | None]],
                       wanted: tuple[bool, bool], fractions: tuple[float, float], n_rows: int | None) -> None:
    """DataError when an asked-for split is too small: validation needs 1 row, test :data:`MIN_TEST_ROWS`.

    ``wanted``: whether (validation, test) were asked for (a fraction > 0, or fixed splits);
    ``n_rows``: the rows cut by ``fractions`` (None for fixed splits). The message says how many rows would do.
    """
    need = (int(wanted[0]), MIN_TEST_ROWS * int(wanted[1]))
    sizes = [len(x) for x, _ in parts]
    if sizes[1] >= need[0] and sizes[2] >= need[1]:
        return
    have = (f"train {sizes[0]}, validation {sizes[1]}, test {sizes[2]} rows, but {need[0]} validation and {need[1]} "
            "test rows are needed (test scores are means with standard errors)")
    if n_rows is None:
        raise DataError(f"{name}: the fixed splits hold {have}: add rows to those splits")
    least = next((n for n in range(n_rows + 1, n_rows + 10**6)
                  if min(np.subtract(_split_sizes(n, fractions), (1, *need))) >= 0), None)
    raise DataError(f"{name}: {n_rows} rows split by val_fraction={fractions[0]:g} and test_fraction={fractions[1]:g} "
                    f"give {have}: provide at least {least} rows, or set the fraction of a split you do not need to 0")


def _split_sizes(n: int, fractions: tuple[float, float]) -> tuple[int, int, int]:
    """(train, validation, test) rows of :func:`_split` for n rows."""
    n_val, n_test = (int(round(n * f)) for f in fractions)
    return n - n_val - n_test, n_val, n_test


# ----------------------------------------------------------------------------- splitting
def _labels(y: object, n: int, name: str) -> torch.Tensor:
    return class_labels(y, n, name)  # pyro_vae.labels: length, NaN, integer and sign checks


def _split(x: torch.Tensor, y: torch.Tensor | None, fractions: tuple[float, float], seed: int
           ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Shuffle rows with ``seed`` and cut them into [train, val, test] by (val, test) fractions."""
    n = x.shape[0]
    _, n_val, n_test = _split_sizes(n, fractions)
    if n - n_val - n_test < 1:
        raise DataError(f"{n} rows are too few for val/test fractions {fractions}; "
                        "lower the fractions or provide more data")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    parts = (perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test])
    return [(x[p], None if y is None else y[p]) for p in parts]


def _finish(name: str, parts: list[tuple[torch.Tensor, torch.Tensor | None]],
            image_shape: tuple[int, ...] | None, binarize: str, seed: int,
            max_train: int | None, *, wanted: tuple[bool, bool], fractions: tuple[float, float],
            n_rows: int | None) -> DataSplits:
    """Check the split sizes (:func:`_check_split_sizes`), apply ``max_train`` and binarization, build the DataSplits."""
    _check_split_sizes(name, parts, wanted, fractions, n_rows)
    (tr, ytr), (va, yva), (te, yte) = parts
    if max_train is not None:
        tr, ytr = tr[:max_train], None if ytr is None else ytr[:max_train]
    if binarize in ("threshold", "dynamic"):
        for split, t in (("train", tr), ("val", va), ("test", te)):
            if t.numel() and (t.min() < 0 or t.max() > 1):
                raise DataError(
                    f"binarize={binarize!r} needs values in [0, 1] but the {split} split spans "
                    f"[{float(t.min()):g}, {float(t.max()):g}]; rescale it or use binarize='none'")
    if binarize == "threshold":
        tr, va, te = ((t > 0.5).float() for t in (tr, va, te))
    elif binarize == "dynamic":  # train is resampled by batches(); evaluation data is fixed once
        gen = torch.Generator().manual_seed(seed)
        va, te = torch.bernoulli(va, generator=gen), torch.bernoulli(te, generator=gen)
    logger.info("%s: train %s, val %s, test %s, binarize=%s", name, tuple(tr.shape),
                tuple(va.shape), tuple(te.shape), binarize)
    return DataSplits(name, tr.contiguous(), va.contiguous(), te.contiguous(),
                      ytr, yva, yte, image_shape, binarize)


# ----------------------------------------------------------------------------- IDX (MNIST)


def _find(name: str, folder: Path, filename: str, subdir: str) -> Path:
    """Locate ``filename`` (or its un-gzipped twin) in ``folder/subdir`` or ``folder``."""
    stems = [filename] + ([filename[:-3]] if filename.endswith(".gz") else [])
    candidates = [d / s for d in (folder / subdir, folder) for s in stems]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"{name} file {filename!r} not found; searched {', '.join(str(c) for c in candidates)}. "
        f"Put the files in {folder / subdir}, point the {ENV_VAR} environment variable or "
        f"--data-dir at the folder holding them, or pass download=True "
        f"(`pyro-vae ... --download`) to fetch them"
        + (" (binarized-mnist cannot be downloaded automatically)" if name == "binarized-mnist" else "")
    )


def _pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W) -> float32 (N, H*W) in [0, 1]."""
    return torch.from_numpy(images.reshape(images.shape[0], -1)).float().div_(255.0)


def _int64(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64))


def _load_idx_dataset(name: str, folder: Path, download: bool) -> tuple[np.ndarray, ...]:
    subdir, resources, _ = _IDX_DATASETS[name]
    try:
        paths = [_find(name, folder, f, subdir) for f in resources]
    except DataError:
        if not download:
            raise
        download_dataset(name, folder)
        paths = [_find(name, folder, f, subdir) for f in resources]
    x_tr, y_tr, x_te, y_te = (
        read_idx(p, IDX_MAGIC_IMAGES if "images" in p.name else IDX_MAGIC_LABELS) for p in paths)
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DataError(f"{name} {split} images {x.shape} and labels {y.shape} do not match; "
                            "the files are from different datasets or damaged")
    return x_tr, y_tr, x_te, y_te


# ----------------------------------------------------------------------------- binarized MNIST
def _read_amat(path: Path) -> np.ndarray:
    """Read a binarized-MNIST ``.amat``: a MATLAB MAT-file (variable ``X``) or whitespace text."""
    with open(path, "rb") as fh:
        is_mat = fh.read(6) == b"MATLAB"
    try:
        if not is_mat:
            return np.loadtxt(path, dtype=np.float32, ndmin=2)
        import scipy.io

        mat = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    except (ValueError, NotImplementedError, OSError) as exc:
        raise DataError(f"cannot read {path} ({exc}); expected a MAT-file or text .amat") from exc
    if "X" in mat:
        return mat["X"]
    if len(mat) == 1:
        return next(iter(mat.values()))
    raise DataError(f"{path} is a MAT-file without a variable 'X' (it has {sorted(mat)})")


# ----------------------------------------------------------------------------- user files
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-"})


def _number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _first_row_numeric(path: Path) -> tuple[bool, list[str]]:
    """(whether the first row is data, its fields). A header is a row of names only.

    A first row of numbers is data; a row with a missing-value token ("NA", "nan", "", ...)
    and nothing else that is a name is data with missing values, refused with that token
    named (never dropped as a header); a row mixing numbers and names is ambiguous and
    refused too.
    """
    with open(path, encoding="utf-8-sig") as fh:
        first = next((line for line in fh if line.strip()), "")
    if not first:
        raise DataError(f"{path} is empty; a .csv file needs rows of numbers (an optional header row first)")
    fields = [f.strip() for f in first.split(",")]
    missing = [f for f in fields if f.lower() in MISSING_TOKENS]
    names = [f for f in fields if not _number(f) and f.lower() not in MISSING_TOKENS]
    if missing and not names:
        raise DataError(f"{path}: the first row holds missing values ({', '.join(map(repr, missing))}); "
                        "pyro-vae needs complete numeric data: impute or drop those entries first")
    if names and len(names) < len(fields):
        raise DataError(f"{path}: the first row mixes names {names} with numbers or missing values; a header "
                        "must hold names only and data rows numbers only: fix the first row")
    return not names, fields


def _read_user_file(path: Path) -> tuple[dict[str, object], list[str]]:
    """Return ({'x'|'train'|'val'|'test'|..._labels: array}, notes) from a .npy/.npz/.csv file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return {"x": np.load(path, allow_pickle=False)}, []
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                keys = {k: npz[k] for k in npz.files}
            if "train" in keys and "test" in keys:
                out = {s: keys[s] for s in ("train", "test") if s in keys}
                out["val"] = keys.get("val", keys.get("valid"))
                for s in ("train", "val", "test"):
                    out[f"{s}_labels"] = keys.get(f"{s}_labels", keys.get(f"y_{s}"))
                return out, []
            xk = next((k for k in ("x", "X", "data") if k in keys), None)
            if xk is None:
                raise DataError(f"{path} has arrays {sorted(keys)}; store the data under 'x', 'X' "
                                "or 'data' (labels under 'y' or 'labels'), or use 'train'/'test'")
            return {"x": keys[xk], "labels": keys.get("y", keys.get("labels"))}, []
        numeric, fields = _first_row_numeric(path)
        arr = np.loadtxt(path, delimiter=",", skiprows=0 if numeric else 1, ndmin=2,
                         dtype=np.float64, encoding="utf-8-sig")
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {str(exc).rstrip('.')}. {suffix} files must hold a numeric array "
                        "(object/pickled arrays are refused)") from exc
    lower = [f.lower() for f in fields]
    if not numeric and "label" in lower and arr.shape[1] == len(fields) > 1:
        j = lower.index("label")
        return {"x": np.delete(arr, j, axis=1), "labels": arr[:, j]}, [f"labels from column {j}"]
    return {"x": arr}, []


# ----------------------------------------------------------------------------- entry point
def default_binarize(dataset: str) -> str:
    """The binarization a spec gets when it names none: "static" for a set shipped binarized, else "dynamic"."""
    return "static" if str(dataset).lower().replace("_", "-") in STATIC_DATASETS else "dynamic"


def load_dataset(source: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 binarize: str = "none", val_fraction: float = 0.1, test_fraction: float = 0.2,
                 seed: int = 0, max_train: int | None = None, download: bool = False) -> DataSplits:
    """Load a built-in dataset (one of :data:`DATASETS`) or a user ``.npy``/``.npz``/``.csv`` file.

    ``val_fraction``/``test_fraction`` cut shuffled (``seed``) data into splits; for MNIST-like
    sets the official test split is kept and only ``val_fraction`` applies; binarized-mnist has
    fixed splits. ``binarize`` is "none", "threshold" (x > 0.5), "dynamic" (val/test sampled
    once from ``seed``, train resampled per epoch by :func:`batches`) or "static" (only for
    binarized-mnist). ``max_train`` keeps the first rows of the (shuffled) training split.
    """
    _check_options(source, data_dir, binarize, val_fraction, test_fraction, seed, max_train, download)
    fractions, wanted = (val_fraction, test_fraction), (val_fraction > 0, test_fraction > 0)
    key = str(source).lower().replace("_", "-") if isinstance(source, str) else None
    if key == "binarized-mnist":
        if binarize == "dynamic":
            raise ConfigError("binarized-mnist is already statically binarized; use "
                              "binarize='static' (or 'none'), or 'mnist' with binarize='dynamic'")
    elif binarize == "static":
        raise ConfigError("binarize='static' is only for 'binarized-mnist'; for other data use "
                          "'none', 'threshold' or 'dynamic'")
    folder = resolve_data_dir(data_dir)
    if key == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.data.astype(np.float32) / 16.0)
        parts = _split(x, torch.from_numpy(digits.target.astype(np.int64)), fractions, seed)
        return _finish("digits", parts, (8, 8), binarize, seed, max_train, wanted=wanted, fractions=fractions,
                       n_rows=len(x))
    if key in _IDX_DATASETS:
        x_tr, y_tr, x_te, y_te = _load_idx_dataset(key, folder, download)
        (tr, ytr), (va, yva), _ = _split(_pixels(x_tr), _int64(y_tr), (val_fraction, 0.0), seed)
        parts = [(tr, ytr), (va, yva), (_pixels(x_te), _int64(y_te))]
        return _finish(key, parts, tuple(x_tr.shape[1:]), binarize, seed, max_train, wanted=(wanted[0], True),
                       fractions=fractions, n_rows=None)
    if key == "binarized-mnist":
        parts = []
        for split in ("train", "valid", "test"):
            path = _find(key, folder, f"binarized_mnist_{split}.amat", "binarized_mnist")
            parts.append((validate_array(_read_amat(path), name=str(path)), None))
        if parts[0][0].shape[1] != 784:
            raise DataError(f"binarized-mnist rows have {parts[0][0].shape[1]} values; expected 784")
        return _finish(key, parts, (28, 28), "static", seed, max_train, wanted=(True, True), fractions=fractions,
                       n_rows=None)

    path = Path(source).expanduser()
    if not path.is_file() or path.suffix.lower() not in FILE_EXTENSIONS:
        problem = (f"{str(path)!r} has extension {path.suffix!r}" if path.is_file()
                   else f"source {str(path)!r} is a folder, not a data file" if path.is_dir()
                   else f"data file {str(path)!r} does not exist" if path.suffix.lower() in FILE_EXTENSIONS
                   else f"unknown dataset {str(source)!r} (no such built-in name or file)")
        raise DataError(f"{problem}; use one of {', '.join(DATASETS)} or a path to a "
                        f"{'/'.join(FILE_EXTENSIONS)} file")
    arrays, notes = _read_user_file(path)
    name = str(path)
    if "train" in arrays:
        tr = validate_array(arrays["train"], name=f"{name}['train']")
        yl = {s: None if arrays[f"{s}_labels"] is None else
              _labels(arrays[f"{s}_labels"], len(arrays[s]), f"{s}_labels")
              for s in ("train", "val", "test") if arrays.get(s) is not None}
        te = validate_array(arrays["test"], name=f"{name}['test']")
        if arrays.get("val") is not None:
            parts = [(tr, yl["train"]), (validate_array(arrays["val"], name=f"{name}['val']"),
                                         yl["val"]), (te, yl["test"])]
        else:
            parts = _split(tr, yl["train"], (val_fraction, 0.0), seed)[:2] + [(te, yl["test"])]
        raw = np.asarray(arrays["train"])
    else:
        raw = np.asarray(arrays["x"])
        x = validate_array(raw, name=name)
        y = None if arrays.get("labels") is None else _labels(arrays["labels"], x.shape[0], "labels")
        parts = _split(x, y, fractions, seed)
    for note in notes:
        logger.info("%s: %s", name, note)
    image_shape = tuple(int(s) for s in raw.shape[1:]) if raw.ndim == 3 else None
    split_here = "train" not in arrays
    return _finish(name, parts, image_shape, binarize, seed, max_train,
                   wanted=wanted if split_here else (wanted[0] or arrays.get("val") is not None, True),
                   fractions=fractions, n_rows=len(raw) if split_here else None)


# ----------------------------------------------------------------------------- batching
def batches(x: torch.Tensor, batch_size: int, *, shuffle: bool = True,
            generator: torch.Generator | None = None, binarize: bool = False,
            drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Yield one epoch of minibatches of the rows of ``x`` as named tensors ``{"x": rows, "idx": row indices}``.

    One ``randperm`` per epoch plus ``index_select`` per batch (no DataLoader). With
    ``binarize=True`` each batch is a fresh Bernoulli(x) draw (dynamic binarization). ``idx``
    lets per-datapoint methods find the parameters of the rows.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size={batch_size!r} must be a positive integer")
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        batch = x.index_select(0, idx) if shuffle else x[start:start + batch_size]
        if binarize:
            try:
                batch = torch.bernoulli(batch, generator=generator)
            except RuntimeError as exc:
                raise DataError("batches(binarize=True) needs values in [0, 1] (probabilities); "
                                "rescale the data or turn binarization off") from exc
        yield {"x": batch, "idx": idx}





def download_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                     base_url: str | None = None, force: bool = False) -> Path:
    """Fetch the IDX files of ``"mnist"`` or ``"fashion-mnist"`` into ``data_dir/<name>/`` (:func:`pyro_vae.idx.download_idx`).

    Each file is streamed to a temporary file in the target folder, its MD5 checked against
    the official value, and only then moved into place; a mismatch deletes the download and
    raises :class:`DataError`. Files already present with the right MD5 are skipped unless
    ``force``. Returns the dataset folder.
    """
    return download_idx(name, resolve_data_dir(data_dir), base_url=base_url, force=force)
