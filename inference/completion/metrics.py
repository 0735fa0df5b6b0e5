r"""Image metrics of completions against the truth.

For S completions x_hat_s of a row with truth x (values in [0, 1], data range 1):

- PSNR(a, x) = 10 log10(1 / MSE(a, x)) dB, MSE = (1/D) sum_d (a_d - x_d)^2, of the posterior mean
  a = (1/S) sum_s x_hat_s, and the best of S: max_s PSNR(x_hat_s, x);
- SSIM (Wang et al. 2004) of the same, scikit-image's ``structural_similarity`` (Gaussian-free default
  7 x 7 window, reduced to the image size for small images; data range 1);
- the per-pixel posterior standard deviation sd_d = std_s x_hat_sd, averaged over the missing pixels;
- for super-resolution, the re-observation error sqrt(mean (pool_f(x_hat) - x_lr)^2): pooling a
  completion gives back its low-resolution input up to this root-mean-square error.

Each metric is a mean over rows with its standard error.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from skimage.metrics import structural_similarity

from pyro_vae.masks import average_pool


def psnr(a: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """10 log10(data_range^2 / MSE) over the last axis (dB); +inf where equal."""
    mse = (a - x).pow(2).mean(-1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(a: torch.Tensor, x: torch.Tensor, image_shape: Sequence[int], data_range: float = 1.0) -> torch.Tensor:
    """scikit-image's SSIM of each row pair (..., D) as images ``image_shape``; shape a.shape[:-1]."""
    shape = tuple(image_shape)
    h, w = shape[-2:]
    win = min(7, h if h % 2 else h - 1, w if w % 2 else w - 1)
    flat_a = a.reshape(-1, a.shape[-1]).double().cpu().numpy()
    flat_x = x.expand_as(a).reshape(-1, a.shape[-1]).double().cpu().numpy()
    channel_axis = 0 if len(shape) == 3 else None
    values = [structural_similarity(u.reshape(shape), v.reshape(shape), data_range=data_range, win_size=win,
                                    channel_axis=channel_axis) for u, v in zip(flat_a, flat_x)]
    return torch.tensor(np.asarray(values)).reshape(a.shape[:-1])


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    v = values.double().reshape(-1)
    return float(v.mean()), (float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan"))


def image_metrics(completions: torch.Tensor, truth: torch.Tensor, image_shape: Sequence[int] | None, *,
                  missing: torch.Tensor | None = None, low_res: torch.Tensor | None = None,
                  factor: int | None = None) -> dict[str, float]:
    """PSNR/SSIM of the mean and best of S, mean per-pixel sd (over ``missing`` pixels), re-observation error.

    ``completions`` (S, B, D) with values in [0, 1]; ``truth`` (B, D). ``low_res`` (B, D/f^2) and ``factor``:
    super-resolution's input, for the re-observation error. SSIM needs ``image_shape``.
    """
    mean = completions.mean(0)
    out: dict[str, float] = {}
    p_mean, p_all = psnr(mean, truth), psnr(completions, truth)
    out["psnr_mean"], out["psnr_mean_stderr"] = _mean_se(p_mean)
    out["psnr_best"], out["psnr_best_stderr"] = _mean_se(p_all.max(0).values)
    if image_shape is not None:
        out["ssim_mean"], out["ssim_mean_stderr"] = _mean_se(ssim(mean, truth, image_shape))
        out["ssim_best"], out["ssim_best_stderr"] = _mean_se(ssim(completions, truth, image_shape).max(0).values)
    sd = completions.std(0) if completions.shape[0] > 1 else torch.zeros_like(mean)
    cols = missing if missing is not None else torch.ones(truth.shape[-1], dtype=torch.bool)
    out["pixel_sd"], out["pixel_sd_stderr"] = _mean_se(sd[:, cols].mean(-1))
    if low_res is not None and factor is not None and image_shape is not None:
        pooled = average_pool(completions, image_shape, factor)
        out["reobservation_rmse"], out["reobservation_rmse_stderr"] = _mean_se((pooled - low_res).pow(2).mean((0, -1)).sqrt())
    out["samples"] = int(completions.shape[0])
    return out


__all__ = ["psnr", "ssim", "image_metrics"]
