"""The figures of a run folder, written together."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from pyro_vae.errors import DataError
from pyro_vae.plots.canvas import FIGURE_NAMES
from pyro_vae.plots.curves import plot_elbo_curves
from pyro_vae.plots.images import plot_prior_samples, plot_reconstructions
from pyro_vae.plots.latents import plot_latent_manifold, plot_latent_space

logger = logging.getLogger(__name__)

def _evaluation_split(data: Any) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    for split in ("test", "val", "train"):
        x = getattr(data, split, None)
        if x is not None and len(x) > 0:
            return split, x, getattr(data, f"{split}_labels", None)
    raise DataError(f"dataset {getattr(data, 'name', '?')!r} has no rows in test, val or train to plot")


def _reconstructions(vae: Any, data: Any, x: torch.Tensor, image_shape: Any, path: Path, n: int = 16) -> Path:
    """Reconstructions of the evaluation rows; under dynamic binarization, of a seeded binarization of grey
    training rows shown with the grey originals (the evaluation rows were binarized once, their grey is gone)."""
    if getattr(data, "binarize", None) == "dynamic":
        grey = data.train[:n]
        binary = torch.bernoulli(grey, generator=torch.Generator().manual_seed(0))
        return plot_reconstructions(vae, binary, image_shape, path, n=n, original=grey)
    return plot_reconstructions(vae, x, image_shape, path, n=n)


def _on_cpu(vae: Any) -> Any:
    """``vae`` itself on the CPU in float32 (where the data are), else a copy there: figures are drawn on the CPU."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in vae.parameters() if t.is_floating_point()):
        return vae
    return copy.deepcopy(vae).to(device="cpu", dtype=torch.float32)


def save_run_figures(vae: Any, data: Any, history: Sequence[Any] | None, figures_dir: str | os.PathLike, *,
                     kept_epoch: float | None = None) -> list[Path]:
    """Write every figure that applies into ``figures_dir`` and return their paths.

    ELBO curves (when ``history`` has records; with the validation ELBO's reconstruction and KL
    terms when the records carry them), reconstructions of 16 rows (grey original, binarized
    input and reconstruction under dynamic binarization) and the latent space of the test split
    (else validation, else train), and for image data (``data.image_shape``) prior
    samples and, when latent_dim == 2, the latent manifold. File names are in
    :data:`FIGURE_NAMES`. ``kept_epoch``: the epoch the ELBO curve marks (default: its best validation ELBO).
    """
    folder = Path(figures_dir)
    vae = _on_cpu(vae)
    split, x, labels = _evaluation_split(data)
    image_shape = getattr(data, "image_shape", None)
    paths: list[Path] = []
    if history is not None and len(history) > 0:
        paths.append(plot_elbo_curves(history, folder / FIGURE_NAMES["elbo"],
                                      title=f"ELBO per datapoint ({getattr(data, 'name', 'data')})",
                                      kept_epoch=kept_epoch))
    else:
        logger.info("no training history: skipping the ELBO curve figure")
    paths.append(_reconstructions(vae, data, x, image_shape, folder / FIGURE_NAMES["reconstructions"]))
    if image_shape is not None:
        paths.append(plot_prior_samples(vae, image_shape, folder / FIGURE_NAMES["prior_samples"]))
    paths.append(plot_latent_space(vae, x, labels, folder / FIGURE_NAMES["latent_space"]))
    if image_shape is not None and vae.latent_dim == 2:
        paths.append(plot_latent_manifold(vae, image_shape, folder / FIGURE_NAMES["latent_manifold"]))
    logger.info("wrote %d figures for the %s split to %s", len(paths), split, folder)
    return paths


__all__ = ['save_run_figures']
