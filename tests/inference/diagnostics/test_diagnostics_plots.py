"""Every diagnostic figure is a PNG written without pyplot's global state."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from inference import diagnostics as dg
from inference.diagnostics import plot_khat_histogram, plot_kl_per_dimension, plot_posterior_overlay
from pyro_vae.errors import ConfigError

from ppca_reference import N, is_png


def test_figures_are_written_without_pyplot_state(ppca, short_nuts, tmp_path):
    import matplotlib.pyplot as plt

    vae, x, W, mu = ppca
    before = plt.get_fignums()
    mcmc = dg.latents_to_inference_data(short_nuts, datapoints=np.arange(N) + 10)
    guide = dg.guide_to_inference_data(vae, x, 40, datapoints=np.arange(N) + 10)
    paths = [
        dg.plot_trace(mcmc, tmp_path / "trace.png"),
        dg.plot_rank(mcmc, tmp_path / "rank.png", datapoints=[11, 12], latents=["z1"]),
        dg.plot_ppc(guide, tmp_path / "ppc.png", num_pp_samples=10),
        plot_khat_histogram(np.array([-np.inf, 0.2, 0.6, 0.9]), tmp_path / "khat.png"),
        plot_kl_per_dimension([0.5, 0.0], [True, False], tmp_path / "kl.png"),
        plot_posterior_overlay(guide.posterior["z"].values[0, :, :2], mcmc.posterior["z"].values[0, :40, :2],
                               tmp_path / "overlay.png"),
    ]
    assert all(p.is_file() and is_png(p) for p in paths)
    assert plt.get_fignums() == before
    assert matplotlib.get_backend()  # untouched, whatever it is
    with pytest.raises(ConfigError, match="not in the InferenceData"):
        dg.plot_trace(mcmc, tmp_path / "t.png", datapoints=[999])
