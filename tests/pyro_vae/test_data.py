"""Tests for pyro_vae.data: loaders, IDX parsing, validation, binarization, batching, download.

Everything runs on scikit-learn's bundled digits and tiny files written to ``tmp_path``; the
only test that reads real MNIST skips when the shared data folder is absent. No network.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from pyro_vae import data
from pyro_vae.data import (
    DATASETS,
    DataSplits,
    batches,
    download_dataset,
    file_md5,
    load_dataset,
    read_idx,
    resolve_data_dir,
    validate_array,
)
from pyro_vae.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(arr: np.ndarray) -> bytes:
    """Raw uint8 IDX encoding written independently of the module under test."""
    magic = 0x0800 | arr.ndim
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload))
    return path


@pytest.fixture
def fake_mnist(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny MNIST-layout folder: 20 train and 6 test 3x4 images with labels."""
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 3, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 3, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 6, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write_gz(tmp_path / "mnist" / name, idx_bytes(arr))
    return tmp_path, arrays


# ----------------------------------------------------------------------------- digits
def test_digits_shapes_range_and_labels():
    d = load_dataset("digits")
    assert isinstance(d, DataSplits) and d.name == "digits" and d.image_shape == (8, 8)
    assert d.feature_dim == 64
    sizes = [t.shape[0] for t in (d.train, d.val, d.test)]
    assert sum(sizes) == 1797 and sizes == [1797 - 180 - 359, 180, 359]
    for t in (d.train, d.val, d.test):
        assert t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1
    assert d.train.max() == 1.0  # /16, not /255
    assert d.train_labels.dtype == torch.int64 and d.train_labels.shape == (sizes[0],)
    assert d.binarize == "none"


def test_digits_split_is_deterministic_and_seed_dependent():
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train, c.train)
    # the three splits partition the data: every one of the 1797 rows exactly once
    from sklearn.datasets import load_digits

    full = np.unique(load_digits().data / 16.0, axis=0, return_counts=True)
    for d in (a, c):
        rows = torch.cat([d.train, d.val, d.test]).double().numpy()
        got = np.unique(rows, axis=0, return_counts=True)
        assert np.allclose(got[0], full[0]) and np.array_equal(got[1], full[1])


def test_fractions_and_max_train():
    d = load_dataset("digits", val_fraction=0.0, test_fraction=0.5, max_train=100)
    assert d.val.shape == (0, 64) and d.test.shape[0] == 898 and d.train.shape[0] == 100
    full = load_dataset("digits", val_fraction=0.0, test_fraction=0.5)
    assert torch.equal(d.train, full.train[:100])
    with pytest.raises(ConfigError, match="leaves no training data"):
        load_dataset("digits", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="max_train"):
        load_dataset("digits", max_train=0)


def test_unknown_name_lists_valid_names_and_extensions(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnsit")
    for name in DATASETS + (".npy", ".npz", ".csv"):
        assert name in str(err.value)
    bad = tmp_path / "x.txt"
    bad.write_text("1,2\n")
    with pytest.raises(DataError, match=r"\.txt"):
        load_dataset(bad)


def test_binarize_option_errors():
    with pytest.raises(ConfigError, match="binarized-mnist"):
        load_dataset("digits", binarize="static")
    with pytest.raises(ConfigError, match="none, threshold, static, dynamic"):
        load_dataset("digits", binarize="bernoulli")


# ----------------------------------------------------------------------------- IDX
def test_idx_round_trip_and_mnist_loader(fake_mnist):
    root, arrays = fake_mnist
    for name, arr in arrays.items():
        out = read_idx(root / "mnist" / name)
        assert out.dtype == np.uint8 and np.array_equal(out, arr)
    d = load_dataset("mnist", data_dir=root, val_fraction=0.25, seed=0)
    assert d.image_shape == (3, 4) and d.feature_dim == 12
    assert d.train.shape == (15, 12) and d.val.shape == (5, 12) and d.test.shape == (6, 12)
    expected_test = torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"].reshape(6, 12) / 255.0).float()
    assert torch.allclose(d.test, expected_test)
    assert torch.equal(d.test_labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte.gz"]).long())
    # train + val is a permutation of the official training set, labels following their rows
    raw = torch.from_numpy(arrays["train-images-idx3-ubyte.gz"].reshape(20, 12) / 255.0).float()
    got = torch.cat([d.train, d.val])
    idx = [int(torch.nonzero((raw == row).all(1))[0]) for row in got]
    assert sorted(idx) == list(range(20))
    labels = torch.from_numpy(arrays["train-labels-idx1-ubyte.gz"]).long()
    assert torch.equal(torch.cat([d.train_labels, d.val_labels]), labels[idx])


def test_idx_files_directly_in_data_dir_and_uncompressed(tmp_path):
    rng = np.random.default_rng(0)
    for name, shape in zip(IDX_FILES, [(4, 2, 2), (4,), (3, 2, 2), (3,)]):
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        (tmp_path / name.removesuffix(".gz")).write_bytes(idx_bytes(arr))  # raw, not gzipped
    d = load_dataset("fashion_mnist", data_dir=tmp_path, val_fraction=0.25)
    assert d.name == "fashion-mnist" and d.train.shape == (3, 4) and d.test.shape == (3, 4)


def test_idx_bad_magic(tmp_path):
    arr = np.zeros((2, 2, 2), dtype=np.uint8)
    path = write_gz(tmp_path / "bad.gz", b"\x89PNG" + idx_bytes(arr)[4:])  # not IDX at all
    with pytest.raises(DataError, match="magic number 2303741511"):
        read_idx(path)
    path = write_gz(tmp_path / "bad2.gz", struct.pack(">I", 2050) + idx_bytes(arr)[4:])
    with pytest.raises(DataError, match="magic number 2050 but magic 2051"):
        read_idx(path, expected_magic=2051)
    good = write_gz(tmp_path / "labels.gz", idx_bytes(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(DataError, match="magic number 2049 but magic 2051"):
        read_idx(good, expected_magic=2051)


def test_idx_truncated(tmp_path):
    payload = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    short = write_gz(tmp_path / "short.gz", payload[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)
    long = write_gz(tmp_path / "long.gz", payload + b"xx")
    with pytest.raises(DataError, match="corrupt"):
        read_idx(long)
    full = gzip.compress(payload)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(full[: len(full) // 2])  # an interrupted download
    with pytest.raises(DataError, match="truncated gzip"):
        read_idx(cut)


def test_mismatched_images_and_labels(fake_mnist):
    root, _ = fake_mnist
    write_gz(root / "mnist" / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", data_dir=root)


def test_missing_file_message(tmp_path, monkeypatch):
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert "PYRO_VAE_DATA" in msg and "--data-dir" in msg and "download=True" in msg
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg


# ----------------------------------------------------------------------------- data dir
def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("PYRO_VAE_DATA")
    import platformdirs

    assert resolve_data_dir() == Path(platformdirs.user_cache_dir("pyro-vae"))


def test_env_var_is_used_by_loader(fake_mnist, monkeypatch):
    root, _ = fake_mnist
    monkeypatch.setenv("PYRO_VAE_DATA", str(root))
    assert load_dataset("mnist").test.shape == (6, 12)


# ----------------------------------------------------------------------------- user files
def test_npy_2d_and_3d(tmp_path):
    x = np.random.default_rng(0).random((50, 7))
    np.save(tmp_path / "flat.npy", x)
    d = load_dataset(tmp_path / "flat.npy", val_fraction=0.2, test_fraction=0.2)
    assert d.image_shape is None and d.feature_dim == 7 and d.train_labels is None
    assert (d.train.shape[0], d.val.shape[0], d.test.shape[0]) == (30, 10, 10)
    assert d.train.dtype == torch.float32 and d.name == str(tmp_path / "flat.npy")
    rows = torch.cat([d.train, d.val, d.test]).double()
    assert torch.allclose(rows.sort(0).values, torch.from_numpy(x).sort(0).values, atol=1e-6)

    imgs = np.random.default_rng(0).integers(0, 300, (10, 5, 6)).astype(np.int32)
    np.save(tmp_path / "img.npy", imgs)
    d = load_dataset(str(tmp_path / "img.npy"))
    assert d.image_shape == (5, 6) and d.feature_dim == 30
    assert d.train.max() > 1  # user data is not rescaled


def test_npz_keys_labels_and_train_test(tmp_path):
    x, y = np.random.default_rng(0).random((40, 3)), np.arange(40) % 4
    np.savez(tmp_path / "a.npz", X=x, labels=y)
    d = load_dataset(tmp_path / "a.npz", seed=1)
    for split, lab in ((d.train, d.train_labels), (d.test, d.test_labels)):
        row_idx = [int(np.argmin(np.abs(x - r.numpy()).sum(1))) for r in split]
        assert torch.equal(lab, torch.from_numpy(y[row_idx]))
    np.savez(tmp_path / "b.npz", train=x, test=x[:5], y_train=y)
    d = load_dataset(tmp_path / "b.npz", val_fraction=0.25)
    assert d.train.shape == (30, 3) and d.val.shape == (10, 3) and d.test.shape == (5, 3)
    assert d.train_labels.shape == (30,) and d.test_labels is None
    np.savez(tmp_path / "c.npz", features=x)
    with pytest.raises(DataError, match="'x', 'X' or 'data'"):
        load_dataset(tmp_path / "c.npz")


def test_csv_with_and_without_header(tmp_path):
    x = np.random.default_rng(0).random((20, 3))
    np.savetxt(tmp_path / "plain.csv", x, delimiter=",")
    d = load_dataset(tmp_path / "plain.csv", val_fraction=0.0, test_fraction=0.0)
    assert d.train.shape == (20, 3) and d.train_labels is None
    np.savetxt(tmp_path / "head.csv", x, delimiter=",", header="a,b,c", comments="")
    assert load_dataset(tmp_path / "head.csv").feature_dim == 3
    with_label = np.column_stack([x, np.arange(20) % 2])
    np.savetxt(tmp_path / "lab.csv", with_label, delimiter=",", header="a,b,c,label", comments="")
    d = load_dataset(tmp_path / "lab.csv", val_fraction=0.0, test_fraction=0.0)
    assert d.feature_dim == 3 and d.train_labels.dtype == torch.int64
    (tmp_path / "bad.csv").write_text("1,2\n3,oops\n")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "bad.csv")


def test_object_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="object"):
        load_dataset(tmp_path / "obj.npy")


# ----------------------------------------------------------------------------- validate_array
def test_validate_array_accepts_and_converts():
    out = validate_array(np.array([[True, False], [False, True]]))
    assert out.dtype == torch.float32 and out.tolist() == [[1, 0], [0, 1]]
    assert validate_array(torch.arange(6).reshape(2, 3)).shape == (2, 3)
    assert validate_array(np.zeros((4, 2, 5), dtype=np.uint8)).shape == (4, 10)


def test_validate_array_nan_and_inf_messages():
    x = np.zeros((30, 6))
    x[17, 4] = x[20, 1] = x[25, 0] = np.nan
    with pytest.raises(DataError, match=r"3 NaN values \(first at row 17, column 4\)"):
        validate_array(x)
    y = np.zeros((3, 3))
    y[2, 1] = np.inf
    with pytest.raises(DataError, match=r"1 infinite values \(first at row 2, column 1\)"):
        validate_array(y, name="mydata")
    with pytest.raises(DataError, match="infinite"):  # finite float64 that overflows float32
        validate_array(np.full((1, 1), 1e300))


@pytest.mark.parametrize("bad, pattern", [
    (np.array([[object(), 1]], dtype=object), "object"),
    (np.array([["a", "b"]]), "strings"),
    (np.ones((2, 2), dtype=np.complex64), "complex"),
    (np.ones(5), r"1-D.*reshape\(-1, 1\)"),
    (np.ones((2, 2, 2, 2)), "4-D"),
    (np.zeros((0, 3)), "empty"),
    (np.zeros((3, 0)), "empty"),
])
def test_validate_array_rejects(bad, pattern):
    with pytest.raises(DataError, match=pattern):
        validate_array(bad)


# ----------------------------------------------------------------------------- binarization
def test_threshold_binarization():
    grey, d = load_dataset("digits"), load_dataset("digits", binarize="threshold")
    assert d.binarize == "threshold"
    for g, b in ((grey.train, d.train), (grey.val, d.val), (grey.test, d.test)):
        assert torch.equal(b, (g > 0.5).float())


def test_dynamic_binarization():
    grey = load_dataset("digits", seed=5)
    d1, d2 = load_dataset("digits", binarize="dynamic", seed=5), load_dataset("digits", binarize="dynamic", seed=5)
    assert torch.equal(d1.train, grey.train)  # train stays grey-level
    assert ((d1.train > 0) & (d1.train < 1)).any()
    for b in (d1.val, d1.test):
        assert set(b.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(d1.val, d2.val) and torch.equal(d1.test, d2.test)  # evaluation is fixed
    assert not torch.equal(d1.test, (grey.test > 0.5).float())  # sampled, not thresholded
    gen = torch.Generator().manual_seed(0)
    e1 = torch.cat([b["x"] for b in batches(d1.train, 64, shuffle=False, generator=gen, binarize=True)])
    e2 = torch.cat([b["x"] for b in batches(d1.train, 64, shuffle=False, generator=gen, binarize=True)])
    assert set(e1.unique().tolist()) == {0.0, 1.0} and not torch.equal(e1, e2)
    assert torch.allclose(e1.mean(), d1.train.mean(), atol=0.01)


def test_binarize_needs_unit_interval(tmp_path):
    np.save(tmp_path / "big.npy", np.full((10, 2), 3.0))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_dataset(tmp_path / "big.npy", binarize="dynamic")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        next(batches(torch.full((4, 2), 2.0), 2, binarize=True))


def write_binarized(folder: Path, fmt: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    splits = {s: rng.integers(0, 2, (n, 784), dtype=np.uint8)
              for s, n in (("train", 5), ("valid", 3), ("test", 2))}
    for s, x in splits.items():
        path = folder / f"binarized_mnist_{s}.amat"
        if fmt == "mat":
            with open(path, "wb") as fh:  # keep the .amat name, as the real files do
                scipy.io.savemat(fh, {"X": x})
        else:
            np.savetxt(path, x, fmt="%d")
    return splits


@pytest.mark.parametrize("fmt", ["mat", "text"])
def test_binarized_mnist_formats(tmp_path, fmt):
    splits = write_binarized(tmp_path / "binarized_mnist", fmt)
    d = load_dataset("binarized-mnist", data_dir=tmp_path)
    assert d.binarize == "static" and d.image_shape == (28, 28) and d.train_labels is None
    for got, key in ((d.train, "train"), (d.val, "valid"), (d.test, "test")):
        assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(splits[key]).float())
    assert load_dataset("binarized-mnist", data_dir=tmp_path, max_train=2).train.shape == (2, 784)
    with pytest.raises(ConfigError, match="already statically binarized"):
        load_dataset("binarized-mnist", data_dir=tmp_path, binarize="dynamic")


# ----------------------------------------------------------------------------- batches
def test_batches_cover_each_row_once():
    x = torch.arange(23, dtype=torch.float32).unsqueeze(1)
    gen = torch.Generator().manual_seed(0)
    got = [b["x"] for b in batches(x, 5, generator=gen)]
    assert [b.shape[0] for b in got] == [5, 5, 5, 5, 3]
    flat = torch.cat(got).squeeze(1)
    assert sorted(flat.tolist()) == list(range(23)) and not torch.equal(flat, x.squeeze(1))
    again = torch.cat([b["x"] for b in batches(x, 5, generator=torch.Generator().manual_seed(0))]).squeeze(1)
    assert torch.equal(flat, again)  # same generator seed -> same order
    assert torch.equal(torch.cat([b["x"] for b in batches(x, 5, shuffle=False)]), x)


def test_batches_drop_last_and_bad_size():
    x = torch.zeros(23, 2)
    assert [b["x"].shape[0] for b in batches(x, 5, drop_last=True)] == [5, 5, 5, 5]
    assert [b["x"].shape[0] for b in batches(x, 23, drop_last=True)] == [23]
    assert list(batches(x, 30, drop_last=True)) == []
    for bad in (0, -1):
        with pytest.raises(DataError, match="batch_size"):
            list(batches(x, bad))


# ----------------------------------------------------------------------------- download
@pytest.fixture
def mirror(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A file:// mirror holding four small fake files whose MD5s are patched in."""
    src = tmp_path / "mirror"
    src.mkdir()
    for i, name in enumerate(IDX_FILES):
        content = f"fake file {i}".encode()
        (src / name).write_bytes(content)
        monkeypatch.setitem(data.MNIST_RESOURCES, name, hashlib.md5(content).hexdigest())
    return src.as_uri(), src


def test_download_installs_files_with_right_md5(tmp_path, mirror):
    url, src = mirror
    folder = download_dataset("mnist", tmp_path / "cache", base_url=url)
    assert folder == tmp_path / "cache" / "mnist"
    for name in IDX_FILES:
        assert (folder / name).read_bytes() == (src / name).read_bytes()
        assert file_md5(folder / name) == data.MNIST_RESOURCES[name]
    assert sorted(p.name for p in folder.iterdir()) == sorted(IDX_FILES)  # no temp files
    for name in IDX_FILES:  # present files are skipped: the mirror is no longer needed
        (src / name).unlink()
    download_dataset("mnist", tmp_path / "cache", base_url=url)


def test_download_md5_mismatch_leaves_nothing(tmp_path, mirror, monkeypatch):
    url, _ = mirror
    monkeypatch.setitem(data.MNIST_RESOURCES, IDX_FILES[1], "0" * 32)
    with pytest.raises(DataError, match="expected 0{32}, got [0-9a-f]{32}"):
        download_dataset("mnist", tmp_path / "cache", base_url=url)
    folder = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == [IDX_FILES[0]]


def test_download_errors(tmp_path):
    with pytest.raises(DataError, match="could not download"):
        download_dataset("mnist", tmp_path, base_url=(tmp_path / "nowhere").as_uri())
    with pytest.raises(DataError, match="cannot download"):
        download_dataset("binarized-mnist", tmp_path)


def test_loader_downloads_when_asked(tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    for name, shape in zip(IDX_FILES, [(4, 2, 2), (4,), (3, 2, 2), (3,)]):
        blob = gzip.compress(idx_bytes(np.ones(shape, dtype=np.uint8)), mtime=0)
        write_gz(src / name, b"").write_bytes(blob)
        monkeypatch.setitem(data.MNIST_RESOURCES, name, hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(data._IDX_DATASETS, "mnist", ("mnist", data.MNIST_RESOURCES, src.as_uri()))
    d = load_dataset("mnist", data_dir=tmp_path / "cache", download=True, val_fraction=0.25)
    assert d.train.shape == (3, 4) and (tmp_path / "cache" / "mnist" / IDX_FILES[0]).is_file()


# ----------------------------------------------------------------------------- real data
@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="shared MNIST copy not available")
def test_real_mnist():
    d = load_dataset("mnist", data_dir=SHARED_DATA)
    assert d.train.shape == (54000, 784) and d.val.shape == (6000, 784) and d.test.shape == (10000, 784)
    counts = torch.bincount(torch.cat([d.train_labels, d.val_labels]), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(d.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert d.train.min() == 0 and d.train.max() == 1


def test_csv_first_row_with_a_missing_value_is_data_not_a_header(tmp_path):
    """A first row with a non-numeric token among numbers ("NA,1,2") is a data row with a missing value:
    it is refused with the token named, never dropped as a header; a header is a row of names only."""
    (tmp_path / "na.csv").write_text("NA,1,2\n3,4,5\n6,7,8\n")
    with pytest.raises(DataError, match="NA"):
        load_dataset(tmp_path / "na.csv", val_fraction=0.0, test_fraction=0.0)
    (tmp_path / "na_only.csv").write_text("NA,N/A,null\n3,4,5\n6,7,8\n")
    with pytest.raises(DataError, match="missing"):
        load_dataset(tmp_path / "na_only.csv", val_fraction=0.0, test_fraction=0.0)
    (tmp_path / "names.csv").write_text("pixel0,pixel1,pixel2\n0,1,0\n1,1,0\n")
    assert load_dataset(tmp_path / "names.csv", val_fraction=0.0, test_fraction=0.0).train.shape == (2, 3)
