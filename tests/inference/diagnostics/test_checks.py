"""The verdicts of the report: the k-hat tolerance, counts of extreme p-values against a binomial quantile, notes."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from inference.diagnostics import CHECK_QUANTILE, KHAT_TOLERANCE, PPCResult, PSISResult, verdicts

S, N, D = 10, 200, 8


def _psis(khat) -> PSISResult:
    khat = np.asarray(khat, dtype=float)
    return PSISResult(khat, np.zeros((khat.size, 2)), np.ones((khat.size, 2)), np.ones(khat.size), 100)


def _ppc(p_loglik: np.ndarray) -> PPCResult:
    zeros = np.zeros((S, D))
    return PPCResult(
        observed_mean=np.zeros(D), observed_sd=np.ones(D), replicated_mean=zeros, replicated_sd=zeros + 1,
        p_mean=np.full(D, 0.5), p_sd=np.full(D, 0.5), loglik_observed=np.zeros((S, N)),
        loglik_replicated=np.zeros((S, N)), p_loglik=p_loglik, replicated=torch.zeros(S, N, D),
    )


def _by_name(checks) -> dict:
    return {c.name: c for c in checks}


def _verdicts(khat=(0.1,) * 20, p_loglik=np.full(N, 0.5)):
    kl, active = np.array([0.5, 0.0]), np.array([True, False])
    return _by_name(verdicts(None, _psis(khat), None, None, None, kl, active, _ppc(p_loglik), {"mcmc": "mcmc_points = 0"}))


def test_counts_of_extreme_p_values_fail_above_the_binomial_quantile():
    """Under a well-specified model the count of p < alpha among N rows is Binomial(N, alpha): the check passes up
    to its 99% quantile and fails one above."""
    limit = int(stats.binom.ppf(CHECK_QUANTILE, N, 0.05))
    at_limit = np.where(np.arange(N) < limit, 0.01, 0.5)
    above = np.where(np.arange(N) < limit + 1, 0.01, 0.5)
    assert _verdicts(p_loglik=at_limit)["PPC log-likelihood"].status == "PASS"
    check = _verdicts(p_loglik=above)["PPC log-likelihood"]
    assert check.status == "FAIL" and not check.passed
    assert f"{limit + 1} of {N}" in check.detail and f"fail above {limit}" in check.detail


def test_khat_fails_when_more_than_the_tolerated_fraction_of_rows_is_unreliable():
    n = 20
    allowed = int(KHAT_TOLERANCE * n)
    assert _verdicts(khat=[0.9] * allowed + [0.1] * (n - allowed))["PSIS k-hat of q(z|x)"].status == "PASS"
    assert _verdicts(khat=[0.9] * (allowed + 1) + [0.1] * (n - allowed - 1))["PSIS k-hat of q(z|x)"].status == "FAIL"


def test_steps_that_did_not_run_are_notes_and_collapsed_dimensions_are_named():
    checks = _verdicts()
    assert checks["MCMC"].status == "NOTE" and checks["MCMC"].passed and "mcmc_points = 0" in checks["MCMC"].detail
    assert checks["gaps"].status == "NOTE" and "not run" in checks["gaps"].detail
    assert "R-hat" not in checks and "q(z|x) vs MCMC" not in checks
    assert "1 of 2 latent dimensions active" in checks["active units"].detail
    assert "collapsed: z1 (KL 0.000 nats)" in checks["active units"].detail
