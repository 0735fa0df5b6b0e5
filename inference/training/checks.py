"""The data checks done once before a fit, so that the hot loop need not validate every step."""

from __future__ import annotations

import torch
from torch import nn

from pyro_vae.data import DataSplits
from pyro_vae.errors import DataError


def check_splits(program: nn.Module, data: DataSplits) -> None:
    """Check every split once against the program's likelihood (``program.check_data``), DataError otherwise.

    For dynamic binarization the training rows must be probabilities in [0, 1], and the
    likelihood must accept both 0 and 1 in every feature (the draws are 0/1 vectors).
    """
    if not isinstance(data, DataSplits):
        raise DataError(
            f"data must be the splits of pyro_vae.data.load_dataset (a DataSplits), got {type(data).__name__}; "
            "save arrays as .npy/.npz/.csv and load them with load_dataset(PATH)"
        )
    if data.train.shape[0] == 0:
        raise DataError("the training split is empty; load more data or lower val/test fractions")
    program.check_data(data.val, name="validation data")
    program.check_data(data.test, name="test data")
    if data.binarize != "dynamic":
        program.check_data(data.train, name="training data")
        return
    x = data.train
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != program.data_dim:
        raise DataError(f"training data must be a float tensor (N, {program.data_dim}), got {tuple(x.shape)}")
    inside = torch.isfinite(x) & (x >= 0) & (x <= 1)
    if not bool(inside.all()):
        row, col = (int(i) for i in (~inside).nonzero()[0])
        raise DataError(
            f"dynamic binarization draws Bernoulli(x) but training value {float(x[row, col]):.4g} "
            f"(row {row}, feature {col}) is not a probability in [0, 1]; rescale the data or use binarize='none'"
        )
    binary = torch.stack([torch.zeros(program.data_dim, dtype=x.dtype), torch.ones(program.data_dim, dtype=x.dtype)])
    program.check_data(binary, name="dynamically binarized training data")


__all__ = ["check_splits"]
