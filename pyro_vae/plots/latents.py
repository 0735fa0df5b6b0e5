"""The latent space: posterior means (projected on two principal components when d > 2) and the 2-D manifold."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.errors import DataError, UnsupportedModelError
from pyro_vae.plots.canvas import CHUNK, as_rows, channels, evaluating, image_grid, new_figure, save_figure, show_grid, value_range
from pyro_vae.rng import seeded

class LatentProjection(NamedTuple):
    """Posterior means mapped to at most two plot coordinates.

    ``coords`` is (N, k), k = min(latent_dim, 2); ``axis_labels`` name the k axes; ``method``
    is "identity" (latent_dim <= 2) or "pca"; ``explained_variance`` holds, for PCA, the
    fraction s_j^2 / sum_i s_i^2 of the centred means' variance along each plotted component
    (None otherwise).
    """

    coords: np.ndarray
    axis_labels: tuple[str, ...]
    method: str
    explained_variance: np.ndarray | None


def project_latents(means: torch.Tensor | np.ndarray) -> LatentProjection:
    """E_q[z | x] rows -> plot coordinates: as they are for D <= 2, else principal components.

    PCA: with centred means M = U S V^T (SVD), the coordinates are M V[:, :2] = U[:, :2] S[:2]
    and component j explains s_j^2 / sum_i s_i^2 of the total variance.
    """
    m = means.detach().cpu().numpy() if torch.is_tensor(means) else np.asarray(means)
    m = m.astype(np.float64).reshape(len(m), -1)
    d = m.shape[1]
    if d <= 2:
        labels = ("E[z|x]",) if d == 1 else ("E[z_1|x]", "E[z_2|x]")
        return LatentProjection(m, labels, "identity", None)
    centred = m - m.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float((s**2).sum())
    ratio = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    coords = centred @ vt[:2].T
    labels = tuple(f"PC{j + 1} of E[z|x] ({100 * ratio[j]:.1f}% of variance)" for j in range(2))
    return LatentProjection(coords, labels, "pca", ratio)


def posterior_means(vae: Any, x: torch.Tensor) -> torch.Tensor:
    """E_q[z | x] for every row of x, (N, latent_dim), computed in chunks in eval mode."""
    x = as_rows(x, vae.data_dim, "x")
    with evaluating(vae):
        return torch.cat([vae.posterior(chunk).mean for chunk in x.split(CHUNK)])


def _scatter_by_label(fig: Figure, ax: Any, u: np.ndarray, v: np.ndarray, labels: np.ndarray | None,
                      size: float) -> None:
    """Scatter (u, v): one colour without labels, a legend for <= 20 integer classes, else a colorbar."""
    if labels is None:
        ax.scatter(u, v, s=size, alpha=0.7, color="tab:blue", linewidths=0)
        return
    classes = np.unique(labels)
    integral = bool(np.all(np.isfinite(labels))) and bool(np.all(labels == np.round(labels)))
    if integral and len(classes) <= 20:
        palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"].colors
        for k, c in enumerate(classes):
            sel = labels == c
            ax.scatter(u[sel], v[sel], s=size, alpha=0.7, color=palette[k], linewidths=0, label=f"{c:g}")
        ax.legend(title="label", fontsize=7, title_fontsize=8, markerscale=max(1.0, 20.0 / size) ** 0.5,
                  loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    else:
        sc = ax.scatter(u, v, c=labels, s=size, alpha=0.7, cmap="viridis", linewidths=0)
        fig.colorbar(sc, ax=ax, label="label")


def plot_latent_space(
    vae: Any, x: torch.Tensor, labels: torch.Tensor | np.ndarray | None, path: str | os.PathLike
) -> Path:
    """Posterior means E_q[z | x] coloured by label.

    latent_dim 2: the means themselves; latent_dim > 2: their first two principal components
    (see :func:`project_latents`); latent_dim 1: a strip plot (means against jittered label;
    a histogram without labels). Up to 20 integer classes get a legend, other labels a
    colorbar; ``labels=None`` draws one colour.
    """
    means = posterior_means(vae, x)
    lab = None
    if labels is not None:
        lab = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
        lab = lab.astype(np.float64)
        if lab.shape != (len(means),):
            raise DataError(f"labels has shape {lab.shape}; expected one label per row of x, i.e. ({len(means)},)")
    proj = project_latents(means)
    n = len(means)
    size = float(np.clip(3000.0 / n, 3.0, 25.0))
    fig = new_figure(6.4, 5.0)
    ax = fig.add_subplot()
    if proj.coords.shape[1] == 1:
        z = proj.coords[:, 0]
        if lab is None:
            ax.hist(z, bins=int(np.clip(n // 20, 10, 60)), color="tab:blue", alpha=0.8)
            ax.set_ylabel("count")
        else:
            jitter = np.random.default_rng(0).uniform(-0.3, 0.3, n)  # local RNG: global state untouched
            _scatter_by_label(fig, ax, z, lab + jitter, lab, size)
            classes = np.unique(lab)
            if len(classes) <= 20 and np.all(classes == np.round(classes)):
                ax.set_yticks(classes, [f"{c:g}" for c in classes])
            ax.set_ylabel("label (jittered)")
        ax.set_xlabel(proj.axis_labels[0])
        title = f"Posterior means E[z|x], latent_dim 1 ({n} points)"
    else:
        _scatter_by_label(fig, ax, proj.coords[:, 0], proj.coords[:, 1], lab, size)
        ax.set_xlabel(proj.axis_labels[0], fontsize=9)
        ax.set_ylabel(proj.axis_labels[1], fontsize=9)
        if proj.method == "pca":
            title = f"PCA of E[z|x], latent_dim {vae.latent_dim} ({n} points)"
        else:
            title = f"Posterior means E[z|x] ({n} points)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, title)


# ----------------------------------------------------------------------------- manifold
def manifold_grid(vae: Any, n: int = 15, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis latent coordinates z_d(u_k) = F_d^{-1}(u_k), u_k = linspace(0.05, 0.95, n).

    F_d is the prior's marginal CDF of z_d; for N(0, I) this is Phi^{-1}(u), the AEVB Fig. 4
    spacing. Priors without an inverse CDF (Student-t, mixtures, VampPrior) use the empirical
    quantiles of 20000 prior draws made with ``seed`` inside ``fork_rng``. Returns the two
    (n,) coordinate vectors (z_1 values, z_2 values).
    """
    u = torch.linspace(0.05, 0.95, n)
    with evaluating(vae):
        try:
            q = vae.prior.marginals().icdf(u[:, None])  # (n, 2)
        except (AttributeError, NotImplementedError):
            with seeded(seed):
                draws = vae.prior().sample((20000,))
            q = torch.quantile(draws, u, dim=0)
    q = q.detach().cpu().numpy().astype(np.float64)
    return q[:, 0], q[:, 1]


def plot_latent_manifold(vae: Any, image_shape: Sequence[int], path: str | os.PathLike, n: int = 15) -> Path:
    """E[x | z] decoded on an n x n grid of prior quantiles (AEVB Fig. 4); latent_dim 2 only.

    z = (F_1^{-1}(u_i), F_2^{-1}(u_j)) for u on a uniform grid in (0.05, 0.95) (see
    :func:`manifold_grid`); z_1 grows to the right, z_2 upwards.
    """
    if vae.latent_dim != 2:
        raise UnsupportedModelError(
            f"plot_latent_manifold draws a 2-D grid of latent codes, but this model has latent_dim = "
            f"{vae.latent_dim}; build the model with latent_dim=2, or use plot_latent_space for a PCA view"
        )
    if n < 2:
        raise ValueError(f"plot_latent_manifold: n must be >= 2 grid points per axis, got {n}")
    z1, z2 = manifold_grid(vae, n)
    zz = torch.tensor([[a, b] for b in z2[::-1] for a in z1], dtype=torch.float32)  # top row: largest z_2
    with evaluating(vae):
        means = torch.cat([vae.decode(chunk).mean for chunk in zz.split(CHUNK)])
    arr = means.detach().cpu().numpy().astype(np.float64)
    grid = image_grid(arr, image_shape, nrow=n)
    vmin, vmax = value_range(arr)
    fig = new_figure(6.2, 6.4)
    ax = fig.add_subplot()
    show_grid(ax, grid, vmin, vmax)
    _, h, w = channels(image_shape)
    ticks = sorted({0, n // 2, n - 1})
    ax.set_xticks([k * (w + 1) + (w - 1) / 2 for k in ticks], [f"{z1[k]:.2f}" for k in ticks], fontsize=8)
    ax.set_yticks([k * (h + 1) + (h - 1) / 2 for k in ticks], [f"{z2[::-1][k]:.2f}" for k in ticks], fontsize=8)
    ax.set_xlabel("z_1 (prior quantiles 5%..95%)")
    ax.set_ylabel("z_2 (prior quantiles 5%..95%)")
    title = f"Learned manifold: E[x | z] on a {n}x{n} grid of prior quantiles"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, title)


# ----------------------------------------------------------------------------- run folder


__all__ = ['LatentProjection', 'project_latents', 'posterior_means', 'plot_latent_space', 'manifold_grid', 'plot_latent_manifold']
