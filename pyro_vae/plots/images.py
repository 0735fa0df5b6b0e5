"""Reconstructions E[x | z = E_q[z | x]] beside x, and samples E[x | z] for z ~ p(z)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pyro_vae.plots.canvas import as_rows, evaluating, image_grid, new_figure, save_figure, show_grid, value_range
from pyro_vae.rng import seeded

def plot_reconstructions(
    vae: Any, x: torch.Tensor, image_shape: Sequence[int] | None, path: str | os.PathLike, n: int = 16,
    *, original: torch.Tensor | None = None,
) -> Path:
    """The first ``n`` rows of x (the model's input) next to their reconstructions E[x | z = E_q[z | x]].

    ``original``: the data x was drawn from (e.g. the grey images behind dynamically binarized
    x), shown above x. Images: one row of images per kind on one grey scale. Other data
    (``image_shape`` None): one panel per datapoint (at most 4) with x_d and its reconstruction
    against the feature index d.
    """
    x = as_rows(x, vae.data_dim, "x")[:n]
    with evaluating(vae):
        recon = vae.reconstruct(x)
    inp, rec = x.numpy().astype(np.float64), recon.detach().cpu().numpy().astype(np.float64)
    title = f"Reconstructions E[x | z = E_q[z|x]] of {len(inp)} datapoints"
    if image_shape is None:
        fig = _feature_panels(inp[:4], rec[:4], title)
    else:
        rows = [(inp, "input x"), (rec, "reconstruction")]
        if original is not None:
            grey = as_rows(original, vae.data_dim, "original")[: len(inp)].numpy().astype(np.float64)
            rows = [(grey, "original"), (inp, "binarized input"), (rec, "reconstruction")]
        vmin, vmax = value_range(*(arr for arr, _ in rows))
        fig = new_figure(max(3.0, 0.6 * len(inp) + 1.2), 1.3 * len(rows) + 0.5)
        for ax, (arr, label) in zip(np.atleast_1d(fig.subplots(len(rows), 1)), rows):
            show_grid(ax, image_grid(arr, image_shape, nrow=len(arr)), vmin, vmax)
            ax.set_ylabel(label, fontsize=8)
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, title)


def _feature_panels(orig: np.ndarray, rec: np.ndarray, title: str) -> Any:
    """One panel per datapoint: x_d (dots) and its reconstruction (line) against the feature index d."""
    k = len(orig)
    fig = new_figure(6.4, 1.6 * k + 0.8)
    axes = np.atleast_1d(fig.subplots(k, 1, sharex=True, squeeze=False)[:, 0])
    d = np.arange(orig.shape[1])
    for i, ax in enumerate(axes):
        ax.plot(d, orig[i], "o", markersize=3, color="tab:blue", label="original x")
        ax.plot(d, rec[i], "-", linewidth=1.2, color="tab:red", label="reconstruction")
        ax.set_ylabel(f"row {i}", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("feature index d")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_sample_grid(x: torch.Tensor, image_shape: Sequence[int], path: str | os.PathLike, title: str) -> Path:
    """A square-ish grid of the rows of ``x`` (flattened images), titled ``title``."""
    arr = x.detach().cpu().numpy().astype(np.float64)
    n = arr.shape[0]
    grid = image_grid(arr, image_shape, nrow=math.ceil(math.sqrt(n)))
    vmin, vmax = value_range(arr)
    longest = max(grid.shape[:2])
    side = 5.0 * min(1.0, longest / 60 + 0.5)  # inches for the longer side: small grids stay small
    fig = new_figure(side * grid.shape[1] / longest + 0.4, side * grid.shape[0] / longest + 0.6)
    ax = fig.add_subplot()
    show_grid(ax, grid, vmin, vmax)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, title)


def plot_prior_samples(
    vae: Any, image_shape: Sequence[int], path: str | os.PathLike, n: int = 64, seed: int = 0
) -> Path:
    """A grid of n decoder means E[x | z], z ~ p(z), drawn with ``seed``.

    The draw runs inside ``torch.random.fork_rng``: the global torch RNG state is the same
    after the call as before it.
    """
    if n < 1:
        raise ValueError(f"plot_prior_samples: n must be >= 1, got {n}")
    with seeded(seed):
        with evaluating(vae):
            samples = vae.sample(n, mean=True)
    return plot_sample_grid(samples, image_shape, path, f"Prior samples: E[x | z], z ~ p(z) (n={n}, seed={seed})")


# ----------------------------------------------------------------------------- latent space


__all__ = ['plot_reconstructions', 'plot_prior_samples', 'plot_sample_grid']
