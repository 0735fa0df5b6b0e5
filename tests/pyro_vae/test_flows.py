"""Flow guide families: change of variables, vectorization over particles and datapoints, and their fit with the objectives."""

from __future__ import annotations

import pyro
import pytest
import torch

from inference.evaluate import elbo_samples, log_importance_weights
from inference.objectives import describe_kl, kl_mode, make_objective
from inference.objectives.registry import check_objective
from pyro_vae import GUIDES, build_vae
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.flows import FlowPosterior
from pyro_vae.registry import BuildContext

FLOWS = ["iaf", "householder", "planar", "sylvester", "spline"]
SMALL = dict(latent_dim=3, encoder={"name": "mlp", "hidden": [16]}, decoder={"name": "mlp", "hidden": [16]})


def family(name, d=3, c=4, **options):
    return GUIDES.build(name, d, context=BuildContext(d, 5), context_dim=c, **options)


@pytest.mark.parametrize("name", FLOWS)
def test_log_prob_of_own_draws_is_the_change_of_variables_formula(name):
    """log q(z) = log N(eps; mu, sigma^2) - log |det dz/deps|, the Jacobian by autograd on D = 3 (float64).

    z = f(eps) is the family's own draw (same RNG state for eps and z); the determinant is taken of
    the (D, D) block of each datapoint in the (B, D, B, D) Jacobian of the flow applied to eps.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fam = family(name).double()
        eta = torch.randn(2, fam.param_size, dtype=torch.float64)
        q = fam(eta)
        assert isinstance(q, FlowPosterior) and q.batch_shape == (2,) and q.event_shape == (3,)
        torch.manual_seed(1)
        eps = q.base_dist.rsample()
        torch.manual_seed(1)
        z = q.rsample()
        log_q = q.log_prob(z)

        def flow(e):
            y = e
            for t in fam(eta).transforms:
                y = t(y)
            return y

        jac = torch.autograd.functional.jacobian(flow, eps)
        assert torch.allclose(flow(eps), z)
        logdet = torch.stack([torch.linalg.slogdet(jac[i, :, i, :])[1] for i in range(2)])
    expected = q.base_dist.log_prob(eps) - logdet
    torch.testing.assert_close(log_q, expected, rtol=0, atol=1e-9)
    assert not torch.allclose(logdet, torch.zeros(2, dtype=torch.float64)) or name == "householder"  # a real flow, not the identity
    if name == "householder":
        torch.testing.assert_close(logdet, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-9)  # volume-preserving


@pytest.mark.parametrize("name", FLOWS)
def test_sampling_and_log_prob_are_vectorized_over_particles_and_datapoints(name):
    """K particles x B datapoints in one pass: the plate expands q to (K, B); the moments leave the draws scorable."""
    torch.manual_seed(0)
    q = family(name)(torch.randn(5, family(name).param_size)).expand((7, 5))
    z = q.rsample()
    assert z.shape == (7, 5, 3)
    _ = q.mean, q.variance  # Monte Carlo moments must not disturb the cached draw
    log_q = q.log_prob(z)
    assert log_q.shape == (7, 5) and bool(torch.isfinite(log_q).all())
    assert q.mean.shape == (7, 5, 3) and bool((q.variance > 0).all())


@pytest.mark.parametrize("name", FLOWS)
def test_a_flow_vae_scores_by_the_one_log_weight_function(name):
    """log w (K, B) from the particle plate at dim -2, equal to log p(x, z) - log q(z | x) of the same draws."""
    pyro.set_rng_seed(0)
    vae = build_vae(data_dim=6, seed=0, guide=name, **SMALL)
    x = torch.rand(4, 6).round()
    log_w = log_importance_weights(vae.model, vae.guide, x, 5)
    assert log_w.shape == (5, 4) and bool(torch.isfinite(log_w).all())
    assert kl_mode(vae) == "monte_carlo" and "Monte Carlo KL" in describe_kl(vae)
    # estimator B falls back to the Monte Carlo term, so with one latent site it equals estimator A on the same draws
    pyro.set_rng_seed(1)
    b = elbo_samples(vae.model, vae.guide, x, "B", 3)
    pyro.set_rng_seed(1)
    a = elbo_samples(vae.model, vae.guide, x, "A", 3)
    torch.testing.assert_close(a, b)


def test_reweighted_wake_sleep_refuses_flows_without_an_inverse_and_takes_the_others():
    x = torch.rand(4, 6).round()
    for name in ("planar", "sylvester"):
        vae = build_vae(data_dim=6, seed=0, guide=name, **SMALL)
        with pytest.raises(UnsupportedModelError, match=r"'rws'.*no inverse.*iaf, householder, spline"):
            check_objective(make_objective("rws", 2), "rws", vae.guide, x)
        check_objective(make_objective("iwae", 2), "iwae", vae.guide, x)  # reparameterized: fine
    for name in ("iaf", "householder", "spline"):
        vae = build_vae(data_dim=6, seed=0, guide=name, **SMALL)
        check_objective(make_objective("rws", 2), "rws", vae.guide, x)
        loss = make_objective("rws", 2).differentiable_loss(vae.model, vae.guide, x)
        assert torch.isfinite(loss)


def test_flows_are_registered_with_their_options():
    assert set(FLOWS) <= set(GUIDES.names())
    assert GUIDES.options("iaf") == ["num_flows", "hidden", "context_dim", "stable"]
    assert GUIDES.options("sylvester") == ["num_flows", "hidden", "context_dim", "reflections"]
    assert GUIDES.options("spline") == ["num_flows", "hidden", "context_dim", "count_bins", "bound"]
    fam = family("iaf", d=4, c=6, num_flows=3, hidden=[8, 8])
    assert fam.param_size == 2 * 4 + 6 and len(fam.transforms) == 3
    with pytest.raises(ConfigError, match=r"householder guide: num_flows .* must be an integer in \[1, 3\]"):
        family("householder", num_flows=4)


def test_pyro_vae_list_shows_every_flow_and_the_hierarchical_program(capsys):
    from inference.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*FLOWS, "hierarchical", "top_latent_dim", "num_flows"]:
        assert name in out


@pytest.mark.parametrize("name", FLOWS)
def test_a_vamp_prior_with_flow_base_mixes_the_base_gaussians_at_the_pseudo_inputs(name):
    """p(z) = (1/K) sum_k N(z; mu(u_k), diag sigma(u_k)^2), the flow's base at each pseudo-input, written out by hand;
    and the flow VAE's log weights under it are finite (the evaluator scores it as any VAE)."""
    vae = build_vae(data_dim=6, seed=0, guide=name, prior={"name": "vamp", "flow_base": True}, **SMALL)
    u = vae.prior.pseudo_inputs
    z = torch.randn(7, 2, 3)
    with torch.no_grad():
        base = vae.posterior(u).base_dist.base_dist  # Normal(mu, sigma), batch (K, D)
        manual = torch.logsumexp(base.log_prob(z[..., None, :]).sum(-1), -1) - torch.log(torch.tensor(float(len(u))))
        torch.testing.assert_close(vae.prior().log_prob(z), manual)
        x = torch.rand(4, 6).round()
        assert bool(torch.isfinite(log_importance_weights(vae.model, vae.guide, x, 5)).all())


def test_a_vamp_prior_scores_under_the_flow_itself_where_it_can_and_otherwise_names_flow_base():
    """Householder flows invert in closed form: the default vamp prior mixes the flows q(z | u_k) themselves,
    (1/K) sum_k N(H_k^{-1} z; mu_k, sigma_k) (|det H| = 1); the others are refused at build with the fix named."""
    vae = build_vae(data_dim=6, seed=0, guide="householder", prior="vamp", **SMALL)
    q = vae.posterior(vae.prior.pseudo_inputs)
    z = torch.randn(5, 3)
    with torch.no_grad():
        by_hand = torch.logsumexp(q.log_prob(z[:, None, :]), -1) - torch.log(torch.tensor(float(q.batch_shape[0])))
        torch.testing.assert_close(vae.prior().log_prob(z), by_hand)
    for name in ("iaf", "planar", "sylvester", "spline"):
        with pytest.raises(ConfigError, match="set the prior option flow_base: true"):
            build_vae(data_dim=6, seed=0, guide=name, prior="vamp", **SMALL)
