"""The two-layer program: exact IS on a linear-Gaussian chain, the contract with SVI and the yardstick, its options."""

from __future__ import annotations

import pyro
import pytest
import torch

from inference.evaluate import elbo, log_likelihood
from inference.svi import fit
from pyro_vae.build import build_program
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.hierarchical import HierarchicalVAE
from pyro_vae.numerics import inverse_softplus
from pyro_vae.spec import ModelSpec

A, A0, S1, S = 1.5, 0.3, 0.7, 0.5  # (S exact in float32: the likelihood stores it so)  z1 = A z2 + A0 + S1 e1;  x = W z1 + B + S e
W = torch.tensor([[1.0], [-0.5], [2.0]], dtype=torch.float64)
B = torch.tensor([0.2, -1.0, 0.5], dtype=torch.float64)


def joint():
    """Mean and covariance of v = (z2, z1, x) (1 + 1 + 3): v = M e + m, e ~ N(0, I_5)."""
    M = torch.zeros(5, 5, dtype=torch.float64)
    M[0, 0] = 1.0
    M[1, 0], M[1, 1] = A, S1
    M[2:, :2] = W @ M[1:2, :2]
    M[2:, 2:] = S * torch.eye(3, dtype=torch.float64)
    m = torch.cat([torch.zeros(1, dtype=torch.float64), torch.tensor([A0], dtype=torch.float64), W[:, 0] * A0 + B])
    return m, M @ M.T


def conditional(a, b):
    """p(v_a | v_b) = N(K v_b + c, cov): K = S_ab S_bb^-1, c = m_a - K m_b, cov = S_aa - K S_ba."""
    m, C = joint()
    K = C[a][:, b] @ torch.linalg.inv(C[b][:, b])
    return K, m[a] - K @ m[b], C[a][:, a] - K @ C[b][:, a]


def set_gaussian(layer, K, c, var):
    """A linear layer -> (loc, rho) of a 1-D diagonal normal: loc = K u + c, softplus(rho) + 1e-4 = sd."""
    layer = layer if isinstance(layer, torch.nn.Linear) else layer[0]
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0] = K.reshape(-1)
        layer.bias[0] = c.reshape(-1)[0]
        layer.bias[1] = inverse_softplus(var.reshape(-1)[0].sqrt() - 1e-4)


def linear_chain(inference):
    spec = ModelSpec(latent_dim=1, program={"name": "hierarchical", "top_latent_dim": 1, "top_hidden": [],
                                            "inference": inference},
                     likelihood={"name": "gaussian", "sigma": S}, encoder="linear", decoder="linear")
    program = build_program(spec, data_dim=3, seed=0).double()
    with torch.no_grad():
        program.decoder.weight.copy_(W)
        program.decoder.bias.copy_(B)
    one = torch.ones(1, dtype=torch.float64)
    set_gaussian(program.top_decoder, A * one, A0 * one, S1**2 * one)  # p(z1 | z2)
    x_idx = [2, 3, 4]
    if inference == "bottom_up":  # q(z1 | x) q(z2 | z1) = p(z1 | x) p(z2 | z1, x), the exact posterior
        set_gaussian(program.encoder, *conditional([1], x_idx))
        set_gaussian(program.top_encoder, *conditional([0], [1]))
    else:  # q(z2 | x) q(z1 | x, z2) = p(z2 | x) p(z1 | z2, x); the network reads (x, z2)
        set_gaussian(program.top_encoder, *conditional([0], x_idx))
        set_gaussian(program.encoder, *conditional([1], x_idx + [0]))
    return program


@pytest.mark.parametrize("inference", ["bottom_up", "top_down"])
def test_importance_sampling_with_the_exact_posterior_is_the_closed_form_log_px(inference):
    """With q(z1, z2 | x) = p(z1, z2 | x) every weight is p(x): the IS estimate equals log N(x; m_x, C_xx) exactly.

    A wrong site, a missing layer in the weights or a wrong plate makes the weights vary (not equal log p(x)).
    """
    program = linear_chain(inference)
    m, C = joint()
    torch.manual_seed(0)
    x = torch.distributions.MultivariateNormal(m[2:], C[2:, 2:]).sample((20,))
    exact = torch.distributions.MultivariateNormal(m[2:], C[2:, 2:]).log_prob(x)
    pyro.set_rng_seed(0)
    est = log_likelihood(program.model, program.guide, x, num_samples=64, progress=False)
    torch.testing.assert_close(est.values, exact, rtol=0, atol=1e-9)
    # and the ELBO (A) is log p(x) too: KL(q || posterior) = 0
    torch.testing.assert_close(elbo(program.model, program.guide, x, estimator="A", num_particles=8, progress=False).values,
                               exact, rtol=0, atol=1e-9)


def test_a_perturbed_proposal_gives_a_lower_estimate_within_its_monte_carlo_error():
    """Move q(z1 | x) off the posterior: IS stays within a few standard errors (from the weights' variance) of
    log p(x) from below on average, and ELBO < log p(x) by KL > 0."""
    program = linear_chain("bottom_up")
    with torch.no_grad():
        program.encoder.bias[0] += 0.5
    m, C = joint()
    torch.manual_seed(1)
    x = torch.distributions.MultivariateNormal(m[2:], C[2:, 2:]).sample((30,))
    exact = torch.distributions.MultivariateNormal(m[2:], C[2:, 2:]).log_prob(x)
    pyro.set_rng_seed(1)
    est = log_likelihood(program.model, program.guide, x, num_samples=2000, progress=False)
    diff = est.values - exact
    se = diff.std() / diff.numel() ** 0.5
    assert abs(float(diff.mean())) < 4 * float(se) + 1e-3
    low = elbo(program.model, program.guide, x, estimator="A", num_particles=200, progress=False)
    assert float((exact - low.values).mean()) > 0.05


@pytest.mark.parametrize("objective", ["trace", "iwae", "rws"])
def test_trains_on_digits_by_svi_and_scores_on_the_yardstick(objective):
    data = load_dataset("digits", binarize="dynamic", max_train=300)
    spec = ModelSpec(latent_dim=4, program={"name": "hierarchical", "top_latent_dim": 2, "top_hidden": [16]},
                     encoder={"name": "mlp", "hidden": [32]}, decoder={"name": "mlp", "hidden": [32]})
    program = build_program(spec, data_dim=64, seed=0)
    assert isinstance(program, HierarchicalVAE) and program.latents == ("z1", "z2")
    before = log_likelihood(program.model, program.guide, data.test[:50], num_samples=20, progress=False).mean
    result = fit(program, data, {"epochs": 5, "lr": 1e-2, "batch_size": 50, "seed": 0, "elbo": objective,
                                 "num_particles": 2}, progress=False)
    assert len(result.history) == 5
    after = log_likelihood(program.model, program.guide, data.test[:50], num_samples=20, progress=False).mean
    assert after > before  # it learned something


def test_options_are_checked_and_the_defaults_follow_latent_dim():
    program = build_program(ModelSpec(latent_dim=6, program="hierarchical"), data_dim=5, seed=0)
    assert program.latent_dims == (6, 3) and program.inference == "bottom_up"
    for options, name in (({"top_latent_dim": 0}, "top_latent_dim"), ({"inference": "sideways"}, "inference"),
                          ({"top_hidden": [0]}, "top_hidden"), ({"top_hidden": "100"}, "top_hidden")):
        with pytest.raises(ConfigError, match=name):
            build_program(ModelSpec(latent_dim=2, program={"name": "hierarchical", **options}), data_dim=5, seed=0)


def test_estimator_b_is_refused_for_the_bottom_up_guide_and_taken_for_the_top_down_one():
    """TraceMeanField_ELBO's closed-form KL of z1 against p(z1 | z2) needs z2 drawn before z1 in the guide."""
    from inference.objectives import make_objective
    from inference.objectives.registry import check_objective
    from pyro_vae.errors import UnsupportedModelError

    x = torch.rand(4, 6).round()
    for inference in ("bottom_up", "top_down"):
        program = build_program(ModelSpec(latent_dim=2, program={"name": "hierarchical", "inference": inference,
                                                                 "top_hidden": [4]}), data_dim=6, seed=0)
        assert program.analytic_kl() == (inference == "top_down")  # kl_mode: diag_normal q against normal p
        if inference == "bottom_up":
            with pytest.raises(UnsupportedModelError, match=r"'meanfield' .* site 'z1' .* biased"):
                check_objective(make_objective("meanfield"), "meanfield", program.guide, x)
        else:
            check_objective(make_objective("meanfield"), "meanfield", program.guide, x)


def test_a_two_layer_run_folder_trains_scores_and_samples_through_the_program(tmp_path):
    """run.train writes a run (metrics with z1's and z2's units), the program draws new data, and the run's
    sample command draws z2, z1 and x ancestrally from the model (seeded)."""
    from inference.run import load_run, sample_run, train

    net = {"name": "mlp", "hidden": [16]}
    spec = {"model": {"latent_dim": 3, "program": {"name": "hierarchical", "top_latent_dim": 2, "top_hidden": [8]},
                      "encoder": net, "decoder": net},
            "data": {"dataset": "digits"}, "train": {"epochs": 1, "elbo": "rws", "num_particles": 2}}
    result = train(spec, tmp_path / "run", eval_samples=10, progress=False)
    assert len(result.metrics["test"]["kl_per_dim"]) == 3 + 2 and result.metrics["kl_mode"] == "monte_carlo"
    _, _, program = load_run(tmp_path / "run")
    assert program.sample(4).shape == (4, 64)
    drawn = sample_run(tmp_path / "run", n=4, seed=3)
    assert {k: tuple(v.shape) for k, v in drawn.latents.items()} == {"z1": (4, 3), "z2": (4, 2)}
    assert torch.equal(drawn.z, drawn.latents["z1"]) and drawn.draws.shape == drawn.means.shape == (4, 64)
    with torch.no_grad():  # the means are E[x | z1] of the drawn z1
        torch.testing.assert_close(drawn.means, program.decode(drawn.z).mean)
    again = sample_run(tmp_path / "run", n=4, seed=3)
    assert torch.equal(again.draws, drawn.draws) and torch.equal(again.latents["z2"], drawn.latents["z2"])
