"""Every diagnostic figure is a PNG written without pyplot's global state."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from inference import diagnostics as dg
from inference.diagnostics import (
    PPCResult, plot_khat_histogram, plot_kl_per_dimension, plot_posterior_overlay, plot_ppc_moments,
)
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


def test_ppc_moments_plot_draws_intervals_that_do_not_contain_the_mean(tmp_path):
    """A skewed replicate distribution: the per-feature mean of a rarely-on pixel is 0 in 98 of 100 replicates
    and 1 in 2, so its mean over replicates (0.02) lies above its 97.5% quantile (0). The figure must still
    draw the 2.5-97.5% interval (error bars measured from the mean would be negative)."""
    rng = np.random.default_rng(0)
    S, n, D = 100, 30, 4
    rep_mean = rng.uniform(0.2, 0.8, size=(S, D))
    rep_mean[:, 0] = 0.0
    rep_mean[:2, 0] = 1.0
    rep_sd = rep_mean * (1 - rep_mean)
    assert rep_mean[:, 0].mean() > np.quantile(rep_mean[:, 0], 0.975)
    ll = rng.normal(size=(S, n))
    ppc = PPCResult(
        observed_mean=rep_mean.mean(0), observed_sd=rep_sd.mean(0), replicated_mean=rep_mean, replicated_sd=rep_sd,
        p_mean=np.full(D, 0.5), p_sd=np.full(D, 0.5), loglik_observed=ll, loglik_replicated=ll, p_loglik=np.full(n, 0.5),
        replicated=torch.zeros(S, n, D),
    )
    assert is_png(plot_ppc_moments(ppc, tmp_path / "ppc_moments.png"))
