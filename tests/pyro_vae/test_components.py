"""Priors, likelihoods, networks and guide families: shapes, support, sampling, math."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_vae import GUIDES, LIKELIHOODS, NETWORKS, PRIORS, BuildContext, ConfigError, DataError, build_vae

D_Z, D_X = 3, 12


def ctx(**kw):
    base = dict(latent_dim=D_Z, data_dim=D_X)
    base.update(kw)
    return BuildContext(**base)


def make_prior(name):
    if name == "vamp":
        vae = build_vae(data_dim=D_X, latent_dim=D_Z, prior="vamp", seed=0)
        return vae.prior
    return PRIORS.build(name, D_Z, context=ctx())


@pytest.mark.parametrize("name", PRIORS.names())
def test_prior_shapes_sampling_and_marginals(name):
    torch.manual_seed(0)
    prior = make_prior(name)
    p = prior()
    assert p.event_shape == (D_Z,) and p.batch_shape == ()
    z = p.sample((4000,))
    assert z.shape == (4000, D_Z)
    lp = p.log_prob(z)
    assert lp.shape == (4000,) and torch.isfinite(lp).all()
    m = prior.marginals()
    assert m.batch_shape == (D_Z,)
    # Each marginal's mean matches the sample mean of the joint within 5 standard errors
    # (Student-t with df=3 has finite variance, so the check is valid for every prior here).
    se = z.std(0) / math.sqrt(len(z))
    assert ((z.mean(0) - m.mean).abs() < 5 * se + 1e-6).all()


@pytest.mark.parametrize("name", ["normal", "learnable_normal", "laplace"])
def test_factorized_prior_joint_is_sum_of_marginals(name):
    prior = make_prior(name)
    z = torch.randn(10, D_Z)
    assert torch.allclose(prior().log_prob(z), prior.marginals().log_prob(z).sum(-1), atol=1e-5)


@pytest.mark.parametrize("name", ["learnable_normal", "mixture", "vamp"])
def test_learnable_priors_receive_gradients(name):
    prior = make_prior(name)
    params = [p for n, p in prior.named_parameters()]
    assert params, f"{name} should have learnable parameters"
    prior().log_prob(torch.randn(5, D_Z)).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_mixture_prior_density_matches_formula():
    prior = make_prior("mixture")
    z = torch.randn(6, D_Z)
    with torch.no_grad():
        w = torch.softmax(prior.logits, 0)
        comp = torch.distributions.Normal(prior.loc, torch.nn.functional.softplus(prior.rho) + 1e-5)
        manual = torch.logsumexp(torch.log(w) + comp.log_prob(z[:, None, :]).sum(-1), dim=-1)
        assert torch.allclose(prior().log_prob(z), manual, atol=1e-5)


@pytest.mark.parametrize(
    "name, options",
    [("laplace", {"scale": 0}), ("student_t", {"df": -1}), ("mixture", {"components": 0}), ("learnable_normal", {"init_scale": 0})],
)
def test_prior_impossible_settings(name, options):
    with pytest.raises(ConfigError, match="must be"):
        PRIORS.build(name, D_Z, context=ctx(), **options)


# --------------------------------------------------------------------------- likelihoods
GOOD_DATA = {
    "bernoulli": lambda: torch.bernoulli(torch.full((5, D_X), 0.5)),
    "continuous_bernoulli": lambda: torch.rand(5, D_X),
    "gaussian": lambda: torch.randn(5, D_X),
    "gaussian_learned": lambda: torch.randn(5, D_X),
    "laplace": lambda: torch.randn(5, D_X),
    "beta": lambda: torch.rand(5, D_X).clamp(0.01, 0.99),
    "poisson": lambda: torch.poisson(torch.full((5, D_X), 3.0)),
}
BAD_DATA = {
    "bernoulli": (torch.full((5, D_X), 0.4), r"\{0, 1\}.*binarize.*continuous_bernoulli"),
    "continuous_bernoulli": (torch.full((5, D_X), 2.0), r"Rescale the data to \[0, 1\]"),
    "beta": (torch.zeros(5, D_X), r"strictly inside \(0, 1\)"),
    "poisson": (torch.full((5, D_X), 1.5), r"counts"),
}


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_likelihood_shapes_support_and_sampling(name):
    torch.manual_seed(0)
    lik = LIKELIHOODS.build(name, D_X, context=ctx())
    raw = torch.randn(4, 5, lik.params_per_feature * D_X)
    px = lik(raw)
    assert px.batch_shape == (4, 5) and px.event_shape == (D_X,)
    x = GOOD_DATA[name]()
    lik.check(x)  # accepted
    assert px.log_prob(x).shape == (4, 5)
    sample = px.sample()
    assert bool(lik.support.check(sample).all())


@pytest.mark.parametrize("name", sorted(BAD_DATA))
def test_likelihood_refuses_data_outside_support(name):
    lik = LIKELIHOODS.build(name, D_X, context=ctx())
    bad, match = BAD_DATA[name]
    with pytest.raises(DataError, match=match):
        lik.check(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_likelihood_refuses_non_finite(value):
    x = torch.zeros(3, D_X)
    x[1, 2] = value
    with pytest.raises(DataError, match=r"non-finite 1 value\(s\).*row 1, feature 2"):
        LIKELIHOODS.build("gaussian", D_X, context=ctx()).check(x)


def test_bernoulli_validation_still_raises_inside_pyro():
    lik = LIKELIHOODS.build("bernoulli", D_X, context=ctx())
    with pytest.raises(ValueError):
        lik(torch.zeros(2, D_X)).log_prob(torch.full((2, D_X), 0.3))


def test_gaussian_learned_sigma_shared_vs_per_feature():
    shared = LIKELIHOODS.build("gaussian_learned", D_X, context=ctx(), shared=True, init_sigma=0.3)
    per = LIKELIHOODS.build("gaussian_learned", D_X, context=ctx(), init_sigma=0.3)
    assert shared.rho.numel() == 1 and per.rho.numel() == D_X
    assert torch.allclose(shared.sigma, torch.tensor(0.3), atol=1e-6)  # starts at exactly init_sigma
    fixed = LIKELIHOODS.build("gaussian", D_X, context=ctx(), sigma=0.2)
    assert not list(fixed.parameters())
    x = torch.zeros(1, D_X)
    expected = torch.distributions.Normal(0.0, 0.2).log_prob(torch.tensor(0.0)) * D_X  # sigma is exact
    assert torch.allclose(fixed(torch.zeros(1, D_X)).log_prob(x), expected)


# --------------------------------------------------------------------------- networks
@pytest.mark.parametrize("image_shape", [(8, 8), (28, 28), (5, 7), (3, 6, 6)])
def test_conv_pair_exact_shapes(image_shape):
    d = math.prod(image_shape)
    c = ctx(data_dim=d, image_shape=image_shape)
    enc = NETWORKS.build("conv", d, 10, context=c.with_role("encoder"), channels=[4, 8])
    dec = NETWORKS.build("conv", D_Z, 2 * d, context=c.with_role("decoder"), channels=[4, 8])
    assert enc(torch.rand(2, 3, d)).shape == (2, 3, 10)
    assert dec(torch.randn(2, 3, D_Z)).shape == (2, 3, 2 * d)


def test_conv_refuses_non_image_data():
    with pytest.raises(ConfigError, match="needs image data.*use the 'mlp' network"):
        NETWORKS.build("conv", D_X, 4, context=ctx().with_role("encoder"))


def test_mlp_options_and_errors():
    net = NETWORKS.build("mlp", D_X, 4, context=ctx(), hidden=[7, 5], activation="tanh")
    assert [m.out_features for m in net if isinstance(m, torch.nn.Linear)] == [7, 5, 4]
    with pytest.raises(ConfigError, match="unknown activation 'swishy'.*relu"):
        NETWORKS.build("mlp", D_X, 4, context=ctx(), activation="swishy")
    with pytest.raises(ConfigError, match="positive integers"):
        NETWORKS.build("mlp", D_X, 4, context=ctx(), hidden=[0])



def test_an_mlp_given_parts_is_the_network_on_their_concatenation_value_and_gradient():
    """W [a; b] + c = W_a a + W_b b + c: the parts keep their own batch shapes and broadcast after the first layer."""
    from pyro_vae.m2 import joined, through

    torch.manual_seed(0)
    net = NETWORKS.build("mlp", 7 + 3, 4, context=ctx(), hidden=[6, 5], activation="softplus")
    a = torch.randn(8, 7)  # one row each
    onehot = torch.eye(3).reshape(3, 1, 3)  # every class, broadcast over the rows
    got = net(a, onehot)
    expected = net(joined(a, onehot))
    assert got.shape == (3, 8, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    params = list(net.parameters())
    for g, e in zip(torch.autograd.grad(got.square().sum(), params), torch.autograd.grad(expected.square().sum(), params)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(through(net, a, onehot), expected, rtol=1e-5, atol=1e-6)
    wrapped = torch.nn.Sequential(torch.nn.Identity(), net)  # any other module gets the concatenation itself
    torch.testing.assert_close(through(wrapped, a, onehot), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="the parts have 9 features in all.*takes 10"):
        net(a, onehot[..., :2])

# --------------------------------------------------------------------------- guides
@pytest.mark.parametrize("name", GUIDES.names())
def test_guide_families_are_reparameterized_gaussians(name):
    torch.manual_seed(0)
    fam = GUIDES.build(name, D_Z, context=ctx())
    eta = torch.randn(6, fam.param_size, requires_grad=True)
    q = fam(eta)
    assert q.batch_shape == (6,) and q.event_shape == (D_Z,)
    assert q.has_rsample
    z = q.rsample((3,))
    z.sum().backward()
    assert eta.grad is not None and eta.grad.abs().sum() > 0
    cov = q.covariance_matrix if hasattr(q, "covariance_matrix") else torch.diag_embed(q.variance)
    assert (torch.linalg.eigvalsh(cov) > 0).all()


@pytest.mark.parametrize("name", ["lowrank_normal", "full_normal"])
def test_registered_kl_to_diagonal_prior_matches_monte_carlo(name):
    torch.manual_seed(1)
    fam = GUIDES.build(name, D_Z, context=ctx())
    q = fam(torch.randn(4, fam.param_size))
    p = pyro.distributions.Normal(torch.randn(D_Z), torch.rand(D_Z) + 0.5).to_event(1).expand([4])
    kl = kl_divergence(q, p)
    z = q.sample((200000,))
    terms = q.log_prob(z) - p.log_prob(z)
    se = terms.std(0) / math.sqrt(len(z))
    assert ((kl - terms.mean(0)).abs() < 4 * se).all()


def test_the_diagonal_normal_mixture_scores_as_mixture_same_family_value_and_gradient():
    """The expanded-square scoring of the mixture and vamp priors equals pyro's MixtureSameFamily, for any batch shape."""
    from pyro_vae.priors import DiagonalNormalMixture, diagonal_normal_mixture

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, generator=g).requires_grad_()
    loc = (3 * torch.randn(7, D_Z, generator=g)).requires_grad_()
    scale = (0.05 + torch.rand(7, D_Z, generator=g)).requires_grad_()
    z = 4 * torch.randn(5, 3, D_Z, generator=g)
    fast = diagonal_normal_mixture(logits, loc, scale).log_prob(z)
    slow = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits),
                                                 torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)).log_prob(z)
    assert fast.shape == (5, 3)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)
    for a, b in zip(torch.autograd.grad(fast.sum(), (logits, loc, scale)), torch.autograd.grad(slow.sum(), (logits, loc, scale))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    vae = build_vae(data_dim=D_X, latent_dim=D_Z, prior="vamp", seed=0)
    assert isinstance(vae.prior(), DiagonalNormalMixture) and isinstance(make_prior("mixture")(), DiagonalNormalMixture)
    expanded = diagonal_normal_mixture(logits, loc, scale).expand((3,))  # as in a data plate of 3 rows
    torch.testing.assert_close(expanded.log_prob(z), slow, rtol=1e-5, atol=1e-4)
