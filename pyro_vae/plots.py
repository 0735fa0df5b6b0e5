r"""PNG figures for a run folder: ELBO curves, reconstructions, samples, latent space, manifold.

Every function takes data or a trained VAE and a path, writes one PNG and returns its
``Path``. Figures are built with the object-oriented API (``matplotlib.figure.Figure`` on a
``FigureCanvasAgg``): nothing touches pyplot's global state or the user's backend, nothing
is shown, and the figure is released after saving. The figure title is also stored in the
PNG's ``Title`` text chunk, so a script can tell figures apart without looking at them.

What is drawn, for a VAE p(z) p_theta(x | z) with guide q_phi(z | x):

- ELBO curves: L(x) = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z)) in nats per
  datapoint, per epoch, train and validation; the best validation epoch is marked and
  KL warm-up epochs (beta < 1) are shaded.
- Reconstructions: E[x | z = E_q[z | x]] next to x (``vae.reconstruct``).
- Prior samples: E[x | z] for z ~ p(z) (``vae.sample(n, mean=True)``), seeded without
  touching the global RNG.
- Latent space: posterior means E_q[z | x]; for latent_dim > 2 their projection on the first
  two principal components (centred, numpy SVD), axes labelled with explained variance
  s_k^2 / sum_j s_j^2.
- Latent manifold (latent_dim == 2 only): E[x | z] on a grid z = F^{-1}(u) of marginal prior
  quantiles, u on a uniform grid in (0.05, 0.95) (AEVB, Kingma & Welling 2014, Fig. 4).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyro_vae.errors import DataError, UnsupportedModelError

logger = logging.getLogger(__name__)

DPI = 100
FIGURE_NAMES: dict[str, str] = {
    "elbo": "elbo_curves.png",
    "reconstructions": "reconstructions.png",
    "prior_samples": "prior_samples.png",
    "latent_space": "latent_space.png",
    "latent_manifold": "latent_manifold.png",
}
_CHUNK = 1024  # rows per encoder/decoder call when mapping a whole split


# ----------------------------------------------------------------------------- helpers
def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, title: str) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created), ``title`` in its metadata, and release it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Title": title, "Software": "pyro-vae"})
    fig.clear()
    logger.debug("wrote figure %s", path)
    return path


@contextlib.contextmanager
def _evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no_grad for the block; each submodule's training flag is restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def _as_rows(x: Any, data_dim: int, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() != 2 or x.shape[1] != data_dim:
        raise DataError(
            f"{name} must be an (N, {data_dim}) array of flattened datapoints for this model, got shape "
            f"{tuple(x.shape)}; flatten images to rows (x.reshape(len(x), -1))"
        )
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty; pass at least one datapoint")
    return x


def _value_range(*arrays: np.ndarray) -> tuple[float, float]:
    """(0, 1) when every finite value lies in [0, 1] (probabilities, pixels), else (min, max)."""
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _channels(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) from image_shape (H, W) or (C, H, W) with C in {1, 3}."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape  # type: ignore[return-value]
    raise ValueError(
        f"image_shape {shape} cannot be drawn; use (H, W) for grey images or (C, H, W) with C = 1 or 3"
    )


def _show_grid(ax: Any, grid: np.ndarray, vmin: float, vmax: float) -> Any:
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="0.35")
    if grid.ndim == 3:  # RGB: imshow wants values in [0, 1]; padding (NaN) becomes dark grey
        rgb = np.clip((grid - vmin) / (vmax - vmin), 0.0, 1.0)
        rgb[np.isnan(grid)] = 0.35
        image = ax.imshow(rgb, interpolation="nearest")
    else:
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def image_grid(
    images: torch.Tensor | np.ndarray,
    image_shape: Sequence[int],
    nrow: int,
    *,
    pad: int = 1,
    pad_value: float = float("nan"),
) -> np.ndarray:
    """Tile N images into one array, ``nrow`` images per grid row (as torchvision's make_grid).

    ``images`` is (N, D) with D = prod(image_shape) (rows flattened in C order) or
    (N, *image_shape). With c = min(nrow, N) columns and r = ceil(N / c) rows of H x W images
    and ``pad`` pixels between neighbours, the result is (r H + (r - 1) pad, c W + (c - 1) pad)
    for grey images, with a trailing axis of 3 for (3, H, W) images. Padding and the unused
    cells of the last row hold ``pad_value`` (NaN by default: drawn as grey by these plots).
    """
    c_, h, w = _channels(image_shape)
    arr = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    arr = arr.astype(np.float64, copy=False)
    n = arr.shape[0] if arr.ndim else 0
    if n == 0 or arr.size != n * c_ * h * w:
        raise ValueError(
            f"image_grid: got an array of shape {arr.shape}; expected (N, {c_ * h * w}) or "
            f"(N, *{tuple(image_shape)}) with N >= 1"
        )
    if nrow < 1 or pad < 0:
        raise ValueError(f"image_grid: nrow must be >= 1 and pad >= 0, got nrow={nrow}, pad={pad}")
    arr = arr.reshape(n, c_, h, w).transpose(0, 2, 3, 1)  # (N, H, W, C)
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c_), pad_value, dtype=np.float64)
    for k in range(n):
        i, j = divmod(k, cols)
        out[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = arr[k]
    return out[..., 0] if c_ == 1 else out


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def _finite(v: Any) -> float:
    return float(v) if v is not None and math.isfinite(float(v)) else float("nan")


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [start, stop] (inclusive) of the runs of True in ``mask``."""
    spans, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if not m and start is not None:
            spans.append((start, i - 1))
            start = None
    if start is not None:
        spans.append((start, len(mask) - 1))
    return spans


# ----------------------------------------------------------------------------- ELBO curves
class ElboSeries(NamedTuple):
    """Per-epoch ELBO history as arrays (NaN where a value is missing), read off the records.

    ``best`` is the index of the highest validation ELBO (None without validation);
    ``warmup`` lists index ranges [start, stop] (inclusive) of consecutive epochs with beta < 1.
    """

    epochs: np.ndarray
    train: np.ndarray
    val: np.ndarray
    beta: np.ndarray
    best: int | None
    warmup: list[tuple[int, int]]


def elbo_series(history: Sequence[Any]) -> ElboSeries:
    """Arrays of epoch, train ELBO, validation ELBO and beta from records or dicts.

    Each record needs ``train_elbo``; ``epoch`` defaults to its position, ``val_elbo`` to
    missing and ``beta`` to 1. best = argmax_e val_elbo[e] over the epochs that have one.
    """
    records = list(history)
    if not records:
        raise ValueError("plot_elbo_curves: history is empty; train for at least one epoch first")
    epochs = np.array([float(_field(r, "epoch", i)) for i, r in enumerate(records)])
    train = np.array([_finite(_field(r, "train_elbo")) for r in records])
    val = np.array([_finite(_field(r, "val_elbo")) for r in records])
    beta = np.array([_finite(_field(r, "beta", 1.0)) for r in records])
    best = int(np.nanargmax(val)) if np.isfinite(val).any() else None
    return ElboSeries(epochs, train, val, beta, best, _spans(np.nan_to_num(beta, nan=1.0) < 1.0))


def plot_elbo_curves(history: Sequence[Any], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Train and validation ELBO per epoch, L = E_q[log p(x|z)] - KL(q(z|x) || p(z)), nats per datapoint.

    ``history`` holds one record per epoch with ``epoch``, ``train_elbo``, ``val_elbo`` (or
    None) and ``beta`` (an ``inference.training.EpochRecord`` or a dict with those keys). The
    epoch with the highest validation ELBO is marked; KL warm-up is shaded (records with
    beta < 1, plus the epoch in which beta reached 1, since ``beta`` is its value at the last
    step of an epoch); there the train curve is the annealed bound that was optimized. When the first epochs lie far below the rest, the y axis is cut so the later
    curve stays readable and a note says so.
    """
    series = elbo_series(history)
    epochs, train, val = series.epochs, series.train, series.val
    n_epochs = len(epochs)
    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    for k, (a, b) in enumerate(series.warmup):
        # beta is recorded at an epoch's last step, so the epoch whose record first shows
        # beta = 1 annealed its earlier steps too: the shade runs to the end of that epoch.
        end = epochs[b + 1] if b + 1 < n_epochs else epochs[b]
        ax.axvspan(epochs[a] - 0.5, end + 0.5, color="0.85", zorder=0,
                   label="KL warm-up (beta < 1; train = annealed bound)" if k == 0 else None)
    marker = "o" if n_epochs <= 30 else None
    ax.plot(epochs, train, color="tab:blue", marker=marker, markersize=3, label="train ELBO")
    if series.best is not None:
        ok = np.isfinite(val)  # validation may run every k epochs: join the epochs that have it
        ax.plot(epochs[ok], val[ok], color="tab:orange", marker="o" if ok.sum() <= 30 else None, markersize=3,
                label="validation ELBO")
        best = series.best
        ax.axvline(epochs[best], color="tab:green", linestyle=":", linewidth=1)
        ax.plot([epochs[best]], [val[best]], marker="*", markersize=12, color="tab:green", linestyle="none",
                label=f"best validation: {val[best]:.2f} at epoch {epochs[best]:g}")

    values = np.concatenate([train, val])
    values = values[np.isfinite(values)]
    skip = max(1, n_epochs // 10)
    tail = np.concatenate([train[skip:], val[skip:]])
    tail = tail[np.isfinite(tail)]
    if n_epochs >= 5 and tail.size and values.size:
        spread = max(float(tail.max() - tail.min()), 1e-6)
        if float(values.min()) < float(tail.min()) - 2.0 * spread:
            ax.set_ylim(float(tail.min()) - 0.15 * spread, float(values.max()) + 0.1 * spread)
            ax.text(0.01, 0.98, f"early epochs off-scale (lowest {values.min():.1f})", transform=ax.transAxes,
                    fontsize=8, color="0.3", va="top")

    title = title or "ELBO per datapoint"
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per datapoint)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path, title)


# ----------------------------------------------------------------------------- reconstructions
def plot_reconstructions(
    vae: Any, x: torch.Tensor, image_shape: Sequence[int] | None, path: str | os.PathLike, n: int = 8
) -> Path:
    """The first ``n`` rows of x next to their reconstructions E[x | z = E_q[z | x]].

    Images: a row of originals above a row of reconstructions, on one grey scale. Other data
    (``image_shape`` None): one panel per datapoint (at most 4) with x_d and its
    reconstruction against the feature index d.
    """
    x = _as_rows(x, vae.data_dim, "x")[:n]
    with _evaluating(vae):
        recon = vae.reconstruct(x)
    orig, rec = x.numpy().astype(np.float64), recon.detach().cpu().numpy().astype(np.float64)
    if image_shape is None:
        orig, rec = orig[:4], rec[:4]
    title = f"Reconstructions E[x | z = E_q[z|x]] of {len(orig)} datapoints"
    if image_shape is not None:
        vmin, vmax = _value_range(orig, rec)
        fig = _new_figure(max(3.0, 0.9 * len(orig) + 1.2), 2.6)
        axes = fig.subplots(2, 1)
        for ax, arr, label in ((axes[0], orig, "original"), (axes[1], rec, "reconstruction")):
            _show_grid(ax, image_grid(arr, image_shape, nrow=len(arr)), vmin, vmax)
            ax.set_ylabel(label, fontsize=9)
        fig.suptitle(title, fontsize=10)
    else:
        k = len(orig)
        fig = _new_figure(6.4, 1.6 * k + 0.8)
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
    fig.tight_layout()
    return save_figure(fig, path, title)


# ----------------------------------------------------------------------------- prior samples
def plot_prior_samples(
    vae: Any, image_shape: Sequence[int], path: str | os.PathLike, n: int = 64, seed: int = 0
) -> Path:
    """A grid of n decoder means E[x | z], z ~ p(z), drawn with ``seed``.

    The draw runs inside ``torch.random.fork_rng``: the global torch RNG state is the same
    after the call as before it.
    """
    if n < 1:
        raise ValueError(f"plot_prior_samples: n must be >= 1, got {n}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with _evaluating(vae):
            samples = vae.sample(n, mean=True)
    arr = samples.detach().cpu().numpy().astype(np.float64)
    nrow = math.ceil(math.sqrt(n))
    grid = image_grid(arr, image_shape, nrow=nrow)
    vmin, vmax = _value_range(arr)
    longest = max(grid.shape[:2])
    side = 5.0 * min(1.0, longest / 60 + 0.5)  # inches for the longer side: small grids stay small
    fig = _new_figure(side * grid.shape[1] / longest + 0.4, side * grid.shape[0] / longest + 0.6)
    ax = fig.add_subplot()
    _show_grid(ax, grid, vmin, vmax)
    title = f"Prior samples: E[x | z], z ~ p(z) (n={n}, seed={seed})"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, title)


# ----------------------------------------------------------------------------- latent space
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
    x = _as_rows(x, vae.data_dim, "x")
    with _evaluating(vae):
        return torch.cat([vae.posterior(chunk).mean for chunk in x.split(_CHUNK)])


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
    fig = _new_figure(6.4, 5.0)
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
    with _evaluating(vae):
        try:
            q = vae.prior.marginals().icdf(u[:, None])  # (n, 2)
        except (AttributeError, NotImplementedError):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
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
    with _evaluating(vae):
        means = torch.cat([vae.decode(chunk).mean for chunk in zz.split(_CHUNK)])
    arr = means.detach().cpu().numpy().astype(np.float64)
    grid = image_grid(arr, image_shape, nrow=n)
    vmin, vmax = _value_range(arr)
    fig = _new_figure(6.2, 6.4)
    ax = fig.add_subplot()
    _show_grid(ax, grid, vmin, vmax)
    _, h, w = _channels(image_shape)
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
def _evaluation_split(data: Any) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    for split in ("test", "val", "train"):
        x = getattr(data, split, None)
        if x is not None and len(x) > 0:
            return split, x, getattr(data, f"{split}_labels", None)
    raise DataError(f"dataset {getattr(data, 'name', '?')!r} has no rows in test, val or train to plot")


def save_run_figures(vae: Any, data: Any, history: Sequence[Any] | None, figures_dir: str | os.PathLike) -> list[Path]:
    """Write every figure that applies into ``figures_dir`` and return their paths.

    ELBO curves (when ``history`` has records), reconstructions and latent space of the test
    split (else validation, else train), and for image data (``data.image_shape``) prior
    samples and, when latent_dim == 2, the latent manifold. File names are in
    :data:`FIGURE_NAMES`.
    """
    folder = Path(figures_dir)
    split, x, labels = _evaluation_split(data)
    image_shape = getattr(data, "image_shape", None)
    paths: list[Path] = []
    if history is not None and len(history) > 0:
        paths.append(plot_elbo_curves(history, folder / FIGURE_NAMES["elbo"],
                                      title=f"ELBO per datapoint ({getattr(data, 'name', 'data')})"))
    else:
        logger.info("no training history: skipping the ELBO curve figure")
    paths.append(plot_reconstructions(vae, x, image_shape, folder / FIGURE_NAMES["reconstructions"]))
    if image_shape is not None:
        paths.append(plot_prior_samples(vae, image_shape, folder / FIGURE_NAMES["prior_samples"]))
    paths.append(plot_latent_space(vae, x, labels, folder / FIGURE_NAMES["latent_space"]))
    if image_shape is not None and vae.latent_dim == 2:
        paths.append(plot_latent_manifold(vae, image_shape, folder / FIGURE_NAMES["latent_manifold"]))
    logger.info("wrote %d figures for the %s split to %s", len(paths), split, folder)
    return paths
