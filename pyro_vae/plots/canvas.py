"""The canvas every figure is drawn on: Agg figures off pyplot, atomic PNG writes, image grids and small shared helpers."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyro_vae.errors import DataError
from pyro_vae.files import atomic_path

logger = logging.getLogger(__name__)

DPI = 100
FIGURE_NAMES: dict[str, str] = {
    "elbo": "elbo_curves.png",
    "reconstructions": "reconstructions.png",
    "prior_samples": "prior_samples.png",
    "latent_space": "latent_space.png",
    "latent_manifold": "latent_manifold.png",
}
CHUNK = 1024  # rows per encoder/decoder call when mapping a whole split


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (pyplot's global state untouched)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, title: str) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (parent folders created), ``title`` in its metadata, and release it."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Title": title, "Software": "pyro-vae"})
    fig.clear()
    logger.debug("wrote figure %s", path)
    return path


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no_grad for the block; each submodule's training flag is restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def as_rows(x: Any, data_dim: int, name: str) -> torch.Tensor:
    """``x`` as a float (N, data_dim) tensor with N >= 1, else DataError naming ``name``."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() != 2 or x.shape[1] != data_dim:
        raise DataError(
            f"{name} must be an (N, {data_dim}) array of flattened datapoints for this model, got shape "
            f"{tuple(x.shape)}; flatten images to rows (x.reshape(len(x), -1))"
        )
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty; pass at least one datapoint")
    return x


def value_range(*arrays: np.ndarray) -> tuple[float, float]:
    """(0, 1) when every finite value lies in [0, 1] (probabilities, pixels), else (min, max)."""
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def channels(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) from image_shape (H, W) or (C, H, W) with C in {1, 3}."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape  # type: ignore[return-value]
    raise ValueError(
        f"image_shape {shape} cannot be drawn; use (H, W) for grey images or (C, H, W) with C = 1 or 3"
    )


def show_grid(ax: Any, grid: np.ndarray, vmin: float, vmax: float) -> Any:
    """Draw an image grid (NaN padding in dark grey) without ticks; returns the image."""
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
    c_, h, w = channels(image_shape)
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


__all__ = [
    "DPI", "FIGURE_NAMES", "CHUNK", "new_figure", "save_figure", "evaluating", "as_rows", "value_range", "channels",
    "show_grid", "image_grid",
]
