"""Draws to InferenceData in the shared layout, and the netCDF round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference import diagnostics as dg
from inference.diagnostics import log_likelihood_draws
from inference.baselines import initial_guide
from pyro_vae.errors import ConfigError

from ppca_reference import N, d


def test_guide_and_mcmc_inference_data_share_dims_and_coords(ppca, short_nuts):
    vae, x, _, _ = ppca
    labels = np.arange(N) + 100
    ll = log_likelihood_draws(vae, x, short_nuts.z)
    mcmc = dg.latents_to_inference_data(short_nuts, log_likelihood=ll, datapoints=labels)
    guide = dg.guide_to_inference_data(vae, x, 30, datapoints=labels)
    local = dg.guide_to_inference_data(initial_guide(vae, x, "encoder"), x, 30, vae=vae, datapoints=labels)
    for idata in (mcmc, guide, local):
        z = idata.posterior["z"]
        assert z.dims == ("chain", "draw", "datapoint", "latent")
        assert list(z.coords["datapoint"].values) == list(labels)
        assert list(z.coords["latent"].values) == ["z0", "z1"]
        assert idata.log_likelihood["x"].dims == ("chain", "draw", "datapoint")
        assert idata.observed_data["x"].dims == ("datapoint", "feature")
    assert mcmc.posterior["z"].shape == (2, 50, N, d) and guide.posterior["z"].shape == (1, 30, N, d)
    assert guide.posterior_predictive["x"].dims == ("chain", "draw", "datapoint", "feature")
    assert set(mcmc.sample_stats.data_vars) == {"diverging", "acceptance_rate", "step_size", "n_steps", "lp"}
    # the log-likelihood group holds log p(x_i | z_i) of each draw
    z0 = torch.as_tensor(mcmc.posterior["z"].values[1, 7])
    expected = vae.decode(z0).log_prob(x).detach().numpy()
    np.testing.assert_allclose(mcmc.log_likelihood["x"].values[1, 7], expected, rtol=1e-12)


def test_guide_to_inference_data_needs_the_model_for_a_bare_guide(ppca):
    vae, x, _, _ = ppca
    local = initial_guide(vae, x, "encoder")
    with pytest.raises(ConfigError, match="vae="):
        dg.guide_to_inference_data(local.guide, x, 10)
    idata = dg.guide_to_inference_data(local.guide, x, 10, log_likelihood=False, posterior_predictive=False)
    assert set(idata.groups()) == {"posterior", "observed_data"}


def test_netcdf_round_trip_keeps_dims_coords_and_values(ppca, short_nuts, tmp_path):
    vae, x, _, _ = ppca
    idata = dg.latents_to_inference_data(
        short_nuts, log_likelihood=log_likelihood_draws(vae, x, short_nuts.z), datapoints=np.arange(N) * 3
    )
    path = dg.save_netcdf(idata, tmp_path / "sub" / "mcmc.nc")
    back = dg.load_netcdf(path)
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        a, b = idata[group], back[group]
        assert dict(a.sizes) == dict(b.sizes), group
        for name in a.data_vars:
            assert a[name].dims == b[name].dims
            assert a[name].dtype == b[name].dtype, (group, name)
            np.testing.assert_array_equal(a[name].values, b[name].values)
        for name in a.coords:
            np.testing.assert_array_equal(a[name].values, b[name].values)
    with pytest.raises(ConfigError, match="does not exist"):
        dg.load_netcdf(tmp_path / "missing.nc")
