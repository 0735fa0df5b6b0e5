"""Training sources: the Dataset, memory-mapped and DataLoader paths give the tensor path's epoch; shards are disjoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pyro_vae.data import batches, load_dataset
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.sources import DatasetSource, LoaderSource, NpyRows, TensorSource, as_source, shard_bounds


@pytest.fixture(scope="module")
def rows():
    return load_dataset("digits", max_train=230).train  # values in [0, 1]; 230 = 2 x 100 + a short batch of 30


def epoch(source, seed=7, **kw):
    return list(source.epoch(100, torch.Generator().manual_seed(seed), **kw))


def reference(x, seed=7, binarize=False):
    return list(batches(x, 100, generator=torch.Generator().manual_seed(seed), binarize=binarize))


def assert_same_epoch(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert torch.equal(u["idx"], v["idx"])
        assert torch.equal(u["x"], v["x"])


class Rows(Dataset):
    """A map-style dataset returning mappings, as a user's own might."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "label": 0}


@pytest.mark.parametrize("binarize", [False, True])
def test_dataset_path_gives_the_tensor_paths_epoch(rows, binarize):
    want = reference(rows, binarize=binarize)
    assert_same_epoch(epoch(TensorSource(rows, binarize=binarize)), want)
    assert_same_epoch(epoch(DatasetSource(TensorDataset(rows), binarize=binarize)), want)
    assert_same_epoch(epoch(DatasetSource(Rows(rows), binarize=binarize)), want)


def test_memory_mapped_npy_gives_the_tensor_paths_epoch_without_loading_it(rows, tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, (rows.numpy().reshape(-1, 8, 8) * 16).astype(np.uint8))  # bytes, images: as stored on disk
    source = NpyRows(path, scale=1 / 16)
    assert isinstance(source.array, np.memmap)  # read on demand, never loaded whole
    assert_same_epoch(epoch(DatasetSource(source, binarize=True)), reference(rows, binarize=True))
    assert_same_epoch(epoch(DatasetSource(source, num_workers=0)), reference(rows))


def test_shards_are_disjoint_cover_each_global_batch_and_binarize_as_one_process(rows):
    source = TensorSource(rows, binarize=True)
    whole = epoch(source)
    for world in (2, 3):
        parts = [epoch(source, rank=r, world=world) for r in range(world)]
        for step, full in enumerate(whole):
            idx = torch.cat([p[step]["idx"] for p in parts])
            x = torch.cat([p[step]["x"] for p in parts])
            assert torch.equal(idx, full["idx"]) and torch.equal(x, full["x"])
        ds = [epoch(DatasetSource(TensorDataset(rows), binarize=True), rank=r, world=world) for r in range(world)]
        for a, b in zip(parts, ds):
            assert_same_epoch(a, b)
    assert [shard_bounds(5, r, 3) for r in range(3)] == [(0, 1), (1, 3), (3, 5)]
    assert shard_bounds(1, 0, 2) == (0, 0)  # a process may hold no row of a short batch


def test_a_users_dataloader_is_iterated_as_it_is(rows):
    loader = DataLoader(TensorDataset(rows), batch_size=50, shuffle=False)
    source = as_source(loader)
    assert isinstance(source, LoaderSource) and (source.num_rows, source.feature_dim, source.steps(100)) == (230, 64, 5)
    got = epoch(source)
    assert torch.equal(torch.cat([b["x"] for b in got]), rows)
    with pytest.raises(ConfigError, match="DistributedSampler"):
        epoch(source, rank=0, world=2)


def test_bad_sources_are_refused(rows, tmp_path):
    with pytest.raises(DataError, match="Dataset, DataLoader|tensor"):
        as_source([1, 2, 3])
    with pytest.raises(DataError, match="2-D"):
        TensorSource(rows[0])
    with pytest.raises(DataError, match=".npy"):
        NpyRows(tmp_path / "missing.npy")
    with pytest.raises(DataError, match="no batches"):
        LoaderSource(DataLoader(TensorDataset(rows[:0]), batch_size=5))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        epoch(TensorSource(rows * 2, binarize=True), world=2)
