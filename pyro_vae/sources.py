r"""Training rows from anywhere: an in-memory tensor, a map-style ``torch.utils.data.Dataset``, a memory-mapped
``.npy`` file or a ``DataLoader``, each yielding one epoch of named-tensor batches ``{"x", "idx"}``.

The training loop asks a source for an epoch with the batch generator of the fit, the global
batch size B and its shard ``(rank, world)`` of the processes that train together:

* every process draws the same permutation of the N rows (one ``randperm`` per epoch from the
  shared generator) and cuts it into the same global batches of B rows (the last one shorter);
* process ``rank`` keeps the contiguous slice ``[floor(rank * b / W), floor((rank + 1) * b / W))``
  of each global batch of b rows, so the shards are disjoint and cover the epoch;
* dynamic binarization draws one uniform ``u`` per value of the whole global batch from the
  shared generator and keeps ``x = 1[u < p]`` on its slice, so the binarized rows do not depend
  on how many processes share them.

With one process and an in-memory tensor the epoch is exactly :func:`pyro_vae.data.batches`'s;
the Dataset and memory-mapped paths draw the same permutation and binarization (the same
epoch, tested). A :class:`DatasetSource` reads only the rows of its shard, one batch at a time,
through a ``DataLoader`` whose batch sampler is :class:`ShardBatchSampler` (the distributed
sampler of a run under torchrun), so data that do not fit in memory train without being loaded
whole. A user's own ``DataLoader`` (:class:`LoaderSource`) is iterated as it is: under torchrun
its sampler must shard the rows (``DistributedSampler``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from pyro_vae.checks import boolean, got, integer
from pyro_vae.data import batches
from pyro_vae.errors import ConfigError, DataError

Batch = dict[str, torch.Tensor]


def shard_bounds(rows: int, rank: int, world: int) -> tuple[int, int]:
    """The slice ``[lo, hi)`` of a batch of ``rows`` rows that process ``rank`` of ``world`` takes (contiguous, disjoint)."""
    return rows * rank // world, rows * (rank + 1) // world


def _binarize(p: torch.Tensor, global_rows: int, lo: int, generator: torch.Generator | None) -> torch.Tensor:
    """Bernoulli(p) for rows ``lo..`` of a global batch: uniforms drawn for all of it, compared on this slice."""
    u = torch.rand((global_rows, p.shape[1]), generator=generator, dtype=p.dtype)
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise DataError("dynamic binarization needs values in [0, 1] (probabilities); rescale the data or turn "
                        "binarization off")
    return (u[lo:lo + p.shape[0]] < p).to(p.dtype)


def _global_batches(n: int, batch_size: int, generator: torch.Generator | None, shuffle: bool) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return list(order.split(batch_size))


class ShardBatchSampler(Sampler[list[int]]):
    """Batch sampler of one process: its slice of each global batch of a fixed epoch order (module docstring).

    ``order``: the epoch's global batches (row indices). Unlike ``DistributedSampler`` (strided rows,
    its own seed), the shards are cut from the fit's own permutation, so a run with W processes
    sees the same global batches as a run with one.
    """

    def __init__(self, order: Sequence[torch.Tensor], rank: int = 0, world: int = 1) -> None:
        self.order, self.rank, self.world = order, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.order:
            lo, hi = shard_bounds(len(idx), self.rank, self.world)
            yield idx[lo:hi].tolist()

    def __len__(self) -> int:
        return len(self.order)


def _collate(items: list[Any]) -> torch.Tensor:
    rows = [item["x"] if isinstance(item, Mapping) else item[0] if isinstance(item, (tuple, list)) else item
            for item in items]
    if not rows:
        return torch.empty(0, 0)
    return torch.stack([torch.as_tensor(r, dtype=torch.float32).reshape(-1) for r in rows])


class TensorSource:
    """The rows of an in-memory ``(N, D)`` tensor; with one process, exactly :func:`pyro_vae.data.batches`."""

    def __init__(self, x: torch.Tensor, *, binarize: bool = False, name: str = "tensor") -> None:
        if not torch.is_tensor(x) or x.ndim != 2:
            raise DataError(f"training rows must be a 2-D (N, D) tensor, {got(x)}")
        self.x, self.binarize, self.name = x, boolean("binarize", binarize), name

    @property
    def num_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.x.shape[1])

    def steps(self, batch_size: int) -> int:
        """Global batches per epoch."""
        return math.ceil(self.num_rows / batch_size)

    def epoch(self, batch_size: int, generator: torch.Generator | None, *, rank: int = 0, world: int = 1,
              epoch: int = 0, shuffle: bool = True) -> Iterator[Batch]:
        """One epoch of this process's batches (module docstring)."""
        if world == 1:
            yield from batches(self.x, batch_size, shuffle=shuffle, generator=generator, binarize=self.binarize)
            return
        for idx in _global_batches(self.num_rows, batch_size, generator, shuffle):
            lo, hi = shard_bounds(len(idx), rank, world)
            x = self.x.index_select(0, idx[lo:hi])
            yield {"x": _binarize(x, len(idx), lo, generator) if self.binarize else x, "idx": idx[lo:hi]}


class DatasetSource(TensorSource):
    """The rows of a map-style ``Dataset`` (``dataset[i]`` a row, a tuple whose first item is the row, or a
    mapping with ``"x"``), read one shard of one global batch at a time through a ``DataLoader``.

    ``num_workers``: the DataLoader's worker processes (0 reads in the training process).
    """

    def __init__(self, dataset: Dataset, *, binarize: bool = False, num_workers: int = 0, name: str | None = None) -> None:
        if not isinstance(dataset, Dataset) or not hasattr(dataset, "__len__"):
            raise DataError(f"dataset must be a map-style torch.utils.data.Dataset with __len__, {got(dataset)}")
        if len(dataset) == 0:
            raise DataError("the dataset has no rows; give it at least one")
        self.dataset, self.binarize = dataset, boolean("binarize", binarize)
        self.num_workers = integer("num_workers", num_workers, minimum=0)
        self.name = name or type(dataset).__name__
        self._dim = int(_collate([dataset[0]]).shape[1])

    @property
    def num_rows(self) -> int:
        return len(self.dataset)

    @property
    def feature_dim(self) -> int:
        return self._dim

    def epoch(self, batch_size: int, generator: torch.Generator | None, *, rank: int = 0, world: int = 1,
              epoch: int = 0, shuffle: bool = True) -> Iterator[Batch]:
        order = _global_batches(self.num_rows, batch_size, generator, shuffle)
        # its own generator: a DataLoader draws its workers' base seed, which must not shift the global streams
        loader = DataLoader(self.dataset, batch_sampler=ShardBatchSampler(order, rank, world), collate_fn=_collate,
                            num_workers=self.num_workers, generator=torch.Generator().manual_seed(epoch))
        for idx, x in zip(order, loader):
            lo, hi = shard_bounds(len(idx), rank, world)
            if x.numel() == 0:
                x = torch.empty(0, self._dim)
            yield {"x": _binarize(x, len(idx), lo, generator) if self.binarize else x, "idx": idx[lo:hi]}


class NpyRows(Dataset):
    """The rows of a ``.npy`` file, memory-mapped (``np.load(mmap_mode="r")``): only the rows asked for are read.

    Each row is flattened to float32 (an image ``(H, W)`` becomes ``H * W`` values); ``scale``
    multiplies it (e.g. ``1 / 255`` for bytes).
    """

    def __init__(self, path: str | os.PathLike, *, scale: float = 1.0) -> None:
        path = Path(path)
        if not path.is_file() or path.suffix != ".npy":
            raise DataError(f"{str(path)!r} is not a .npy file; save the rows with numpy.save(PATH, array)")
        self.array = np.load(path, mmap_mode="r")
        if self.array.ndim < 2 or not np.issubdtype(self.array.dtype, np.number):
            raise DataError(f"{str(path)!r} holds a {self.array.dtype} array of shape {self.array.shape}; "
                            "expected numbers with one row per datapoint, shape (N, D) or (N, H, W)")
        self.scale = float(scale)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.array[i], dtype=np.float32).reshape(-1) * self.scale)

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        """Rows in one read (sorted fancy indexing on the map), in the order asked."""
        if not indices:
            return []
        order = np.argsort(indices)
        rows = np.asarray(self.array[np.asarray(indices)[order]], dtype=np.float32).reshape(len(indices), -1)
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return list(torch.from_numpy(rows[back] * self.scale))


class LoaderSource:
    """A user's ``DataLoader``, iterated as it is (its own sampler, batch size and workers).

    Batches may be tensors, tuples whose first item is the rows, or mappings with ``"x"`` (and
    ``"idx"``, which per-datapoint methods need). Under torchrun its sampler must be a
    ``DistributedSampler`` (refused otherwise: every process would train on all rows).
    """

    def __init__(self, loader: DataLoader, *, binarize: bool = False, name: str = "dataloader") -> None:
        if not isinstance(loader, DataLoader):
            raise DataError(f"loader must be a torch.utils.data.DataLoader, {got(loader)}")
        self.loader, self.binarize, self.name = loader, boolean("binarize", binarize), name
        first = next(iter(loader), None)
        if first is None:
            raise DataError("the DataLoader yields no batches; give it a dataset with rows")
        self._dim = int(self._batch(first)["x"].shape[1])

    @staticmethod
    def _batch(item: Any) -> Batch:
        if isinstance(item, Mapping):
            out = dict(item)
        elif isinstance(item, (tuple, list)):
            out = {"x": item[0]}
        else:
            out = {"x": item}
        out["x"] = torch.as_tensor(out["x"], dtype=torch.float32).reshape(len(out["x"]), -1)
        return out

    @property
    def num_rows(self) -> int:
        return len(self.loader.dataset)

    @property
    def feature_dim(self) -> int:
        return self._dim

    def steps(self, batch_size: int) -> int:
        return len(self.loader)

    def epoch(self, batch_size: int, generator: torch.Generator | None, *, rank: int = 0, world: int = 1,
              epoch: int = 0, shuffle: bool = True) -> Iterator[Batch]:
        sampler = self.loader.sampler
        if world > 1 and not isinstance(sampler, DistributedSampler):
            raise ConfigError("a DataLoader trained under torchrun must shard its rows: build it with "
                              "sampler=torch.utils.data.DistributedSampler(dataset), or pass the Dataset itself")
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        for item in self.loader:
            batch = self._batch(item)
            if self.binarize:
                batch["x"] = torch.bernoulli(batch["x"], generator=generator)
            yield batch


Source = TensorSource | DatasetSource | LoaderSource


def as_source(data: Any, *, binarize: bool = False) -> Source:
    """``data`` as a source: a tensor, a Dataset, a DataLoader, or a source already (passed through)."""
    if isinstance(data, (TensorSource, LoaderSource)):
        return data
    if torch.is_tensor(data):
        return TensorSource(data, binarize=binarize)
    if isinstance(data, DataLoader):
        return LoaderSource(data, binarize=binarize)
    if isinstance(data, Dataset):
        return DatasetSource(data, binarize=binarize)
    raise DataError(f"training data must be a tensor (N, D), a torch.utils.data.Dataset or DataLoader, {got(data)}")


__all__ = ["shard_bounds", "ShardBatchSampler", "TensorSource", "DatasetSource", "NpyRows", "LoaderSource", "Source",
           "as_source"]
