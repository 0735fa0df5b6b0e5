"""The completion figure: per row, the input | S completions | the truth | the per-pixel posterior sd."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pyro_vae.plots.canvas import image_grid, new_figure, save_figure, show_grid, value_range


def plot_completion_grid(
    inputs: torch.Tensor, completions: torch.Tensor, truth: torch.Tensor, image_shape: Sequence[int],
    path: str | os.PathLike, title: str, *, input_shape: Sequence[int] | None = None,
) -> Path:
    """One line per row i: ``inputs[i]`` (missing pixels NaN, drawn grey; or a low-resolution image of
    ``input_shape``), the S completions ``completions[:, i]``, ``truth[i]``, then sd_s of the completions
    per pixel on its own scale (black 0 to white max)."""
    S, B, _ = completions.shape
    comp = completions.detach().cpu().numpy().astype(np.float64)
    tru = truth.detach().cpu().numpy().astype(np.float64)
    inp = inputs.detach().cpu().numpy().astype(np.float64)
    sd = comp.std(0) if S > 1 else np.zeros_like(tru)
    vmin, vmax = value_range(comp, tru, inp[np.isfinite(inp)].reshape(1, -1) if np.isfinite(inp).any() else tru)
    fig = new_figure(0.6 * (S + 3) + 1.0, 0.6 * B + 0.8)
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, S, 1, 1]}, squeeze=False)[0]
    panels = [(inp, input_shape or image_shape, "input"), (comp.transpose(1, 0, 2).reshape(B * S, -1), image_shape,
              f"{S} completions"), (tru, image_shape, "truth")]
    for ax, (arr, shape, label) in zip(axes, panels):
        ncol = S if label.endswith("completions") else 1
        show_grid(ax, image_grid(arr, shape, nrow=ncol), vmin, vmax)
        ax.set_title(label, fontsize=8)
    show_grid(axes[3], image_grid(sd, image_shape, nrow=1), 0.0, float(sd.max()) or 1.0)
    axes[3].set_title("posterior sd", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, title)


__all__ = ["plot_completion_grid"]
