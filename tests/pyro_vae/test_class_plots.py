"""pyro_vae.plots.classes: the classifier figures are PNGs with their title, drawn from plain numbers or an M2."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pyro_vae import build_program
from pyro_vae.plots.classes import (
    plot_analogies, plot_class_samples, plot_confusion, plot_error_by_labels, plot_reliability,
)
from pyro_vae.spec import ModelSpec


def png(path):
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=float)
        title = img.info.get("Title")
    assert pixels.std() > 0  # not blank
    return pixels, title


def test_figures_from_numbers(tmp_path):
    _, title = png(plot_reliability([0.35, 0.95], [0.2, 0.9], [5, 40], 0.07, tmp_path / "r.png"))
    assert title == "Reliability diagram (ECE 0.070)"
    _, title = png(plot_confusion([[3, 1], [0, 4]], tmp_path / "c.png"))
    assert title == "Confusion matrix (8 rows, accuracy 0.875)"
    _, title = png(plot_error_by_labels([100, 600], {"M2": ([12.0, 5.0], [1.0, 0.5])}, tmp_path / "e.png"))
    assert title == "Test error against the number of labels"
    nan = float("nan")  # a count a method was not run at, a count with no published figure
    _, title = png(plot_error_by_labels([100, 600, 1000], {"M2": ([12.0, nan, 5.0], [1.0, nan, 0.0])}, tmp_path / "n.png",
                                        "with gaps", references={"paper": [11.97, 4.94, nan]}, log_error=True))
    assert title == "with gaps"


def test_analogies_and_class_samples_have_one_column_per_class(tmp_path):
    m2 = build_program(ModelSpec(program={"name": "m2", "classes": 3}, latent_dim=2,
                                 encoder={"name": "mlp", "hidden": [4]}, decoder={"name": "mlp", "hidden": [4]}),
                       data_dim=16, image_shape=(4, 4), seed=0)
    x = torch.rand(2, 16).round()
    a, _ = png(plot_analogies(m2, x, (4, 4), tmp_path / "a.png"))
    s, _ = png(plot_class_samples(m2, (4, 4), tmp_path / "s.png", per_class=2))
    before = torch.random.get_rng_state()
    plot_class_samples(m2, (4, 4), tmp_path / "s2.png", per_class=2)
    assert torch.equal(before, torch.random.get_rng_state())  # seeded draws leave the global RNG alone
    assert np.array_equal(s, png(tmp_path / "s2.png")[0])
