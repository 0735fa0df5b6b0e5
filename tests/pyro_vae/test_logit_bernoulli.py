"""The Bernoulli likelihood's log-density x l - softplus(l) is torch's -BCE-with-logits, and still validates its support."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_vae.likelihoods import LogitBernoulli


def test_log_prob_equals_torchs_bernoulli_and_broadcasts_over_particles():
    torch.manual_seed(0)
    logits = 8 * torch.randn(7, 5, 30, dtype=torch.float64)  # (particles, rows, features), large |l| included
    x = torch.rand(5, 30, dtype=torch.float64).round()
    ours = LogitBernoulli(logits=logits).to_event(1).log_prob(x)
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x.expand(7, 5, 30)).sum(-1)
    assert ours.shape == (7, 5)
    # torch's softplus returns l for l > 20, off by log(1 + e^-l) < e^-20 per feature: 30 features
    torch.testing.assert_close(ours, ref, rtol=0, atol=30 * 2.1e-9)
    assert type(LogitBernoulli(logits=logits[0]).expand((7, 5, 30))) is LogitBernoulli


def test_values_outside_zero_one_are_refused_under_validation():
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="support"):
        LogitBernoulli(logits=torch.zeros(3)).log_prob(torch.tensor([0.0, 0.5, 1.0]))
