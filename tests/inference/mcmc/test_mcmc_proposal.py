"""The Gaussian importance-sampling proposal fitted to NUTS draws (inference.mcmc.proposal): it
scores the exact pPCA log-marginal, samples site "z" in the data plate, and finds rows by value.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.linear_gaussian import log_marginal


def test_gaussian_proposal_scores_the_exact_log_marginal(ppca, nuts_run):
    """IS with the Gaussian fitted to the draws: log p_hat(x_i) within 4 IS standard errors of the exact value.

    Delta method: se_i = sd(w) / (mean(w) sqrt(K)). For q = N(m, 1.2^2 Sigma) and target N(m, Sigma)
    in d = 2, E_q[w^2] / E_q[w]^2 = (1.44 / sqrt(1.88))^2 = 1.10, so the relative ESS is about 0.91.
    """
    evaluate = pytest.importorskip("inference.evaluate", reason="inference/evaluate.py (the IS yardstick) is not there yet")
    vae, x, W, mu, sigma = ppca
    proposal = nuts_run.gaussian_proposal()
    K = 4000
    pyro.set_rng_seed(1)
    with torch.no_grad():
        log_w = evaluate.log_importance_weights(vae.model, proposal, x, K)  # (K, N)
    estimate = log_w.logsumexp(0) - math.log(K)
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / (w.mean(0) * math.sqrt(K))
    exact = log_marginal(x, W, mu, sigma)
    assert ((estimate - exact).abs() < 4 * se).all(), ((estimate - exact).abs() / se).max()
    rel_ess = (w.sum(0) ** 2 / (w**2).sum(0)) / K
    assert (rel_ess > 0.8).all(), rel_ess.min()
    # the yardstick itself, in chunks of rows (the proposal finds each row by value)
    ll = evaluate.log_likelihood(vae.model, proposal, x, num_samples=500, batch_size=7, progress=False)
    assert abs(ll.mean - float(exact.mean())) < 4 * float(se.max()) + 1e-3


def test_gaussian_proposal_site_plate_and_unknown_rows(ppca, nuts_run):
    x, d = ppca.x, ppca.W.shape[1]
    proposal = nuts_run.gaussian_proposal(scale=1.0)
    torch.testing.assert_close(proposal.loc, nuts_run.posterior_mean())
    cov = proposal.scale_tril @ proposal.scale_tril.transpose(-1, -2)
    torch.testing.assert_close(cov, nuts_run.posterior_cov(), atol=1e-5, rtol=1e-4)
    trace = pyro.poutine.trace(proposal).get_trace(x[[3, 1, 3]])
    site = trace.nodes["z"]
    assert site["value"].shape == (3, d)
    assert [(f.name, f.dim, f.size) for f in site["cond_indep_stack"]] == [("data", -1, 3)]
    torch.testing.assert_close(site["fn"].mean, nuts_run.posterior_mean()[[3, 1, 3]])
    with pytest.raises(ConfigError, match="not among"):
        proposal(x[:2] + 0.123)
