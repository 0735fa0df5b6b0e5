"""Image metrics: exact values on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from inference.completion.metrics import image_metrics, psnr, ssim
from pyro_vae.masks import average_pool


def test_psnr_is_ten_log10_of_one_over_the_mse():
    x = torch.zeros(1, 16)
    a = torch.full((1, 16), 0.1)
    assert float(psnr(a, x)) == pytest.approx(20.0)  # MSE 0.01


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 64, generator=g)
    assert torch.allclose(ssim(x, x, (8, 8)), torch.ones(2, dtype=torch.float64))
    assert (ssim(torch.rand(2, 64, generator=g), x, (8, 8)) < 0.5).all()


def test_best_of_s_sd_and_reobservation():
    truth = torch.zeros(1, 16)
    comps = torch.stack([torch.full((1, 16), 0.1), torch.full((1, 16), 0.3)])  # (S=2, B=1, D)
    m = image_metrics(comps, truth, (4, 4), low_res=average_pool(truth, (4, 4), 2), factor=2)
    assert m["psnr_best"] == pytest.approx(20.0)
    assert m["psnr_mean"] == pytest.approx(10 * math.log10(1 / 0.04))
    assert m["pixel_sd"] == pytest.approx(float(torch.tensor([0.1, 0.3]).std()))
    # pooled completions are constant 0.1 and 0.3 against 0: rms over S of each is sqrt((0.01 + 0.09) / 2)
    assert m["reobservation_rmse"] == pytest.approx(math.sqrt(0.05))
