"""Learning-rate schedules by name, the KL weight, and the names a TrainSpec may use."""

from __future__ import annotations

import math

import pytest

from inference.training import check_train_spec, kl_beta, learning_rate
from pyro_vae.errors import ConfigError
from pyro_vae.spec import TrainSpec


@pytest.mark.parametrize("schedule", ["constant", "exponential", "cosine"])
def test_learning_rate_schedules_follow_their_formulas(schedule):
    final = None if schedule == "constant" else 1e-4
    train = TrainSpec(lr=1e-2, lr_schedule=schedule, lr_final=final, epochs=5)
    rates = [learning_rate(train, e) for e in range(1, 6)]
    assert rates[0] == pytest.approx(1e-2)
    if schedule == "constant":
        assert rates == [1e-2] * 5
        return
    assert rates[-1] == pytest.approx(1e-4)
    assert all(b < a for a, b in zip(rates, rates[1:]))
    # midpoint t = 1/2: geometric mean for exponential, arithmetic mean for cosine
    mid = math.sqrt(1e-2 * 1e-4) if schedule == "exponential" else (1e-2 + 1e-4) / 2
    assert rates[2] == pytest.approx(mid)
    assert learning_rate(TrainSpec(lr=1e-2, lr_schedule=schedule, epochs=1), 1) == pytest.approx(1e-2)
    assert learning_rate(TrainSpec(lr=1e-2, lr_schedule=schedule, epochs=3), 3) == pytest.approx(1e-4)  # default lr/100


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr_schedule="linear"), "lr_schedule='linear' is not valid; choose one of: constant, cosine, exponential"),
        (dict(elbo="elbow"), "elbo='elbow' is not valid; choose one of: .*meanfield.*trace"),
        (dict(optimizer="sgd"), "optimizer='sgd' is not valid; choose one of: adam, adamw, clipped_adam"),
        (dict(lr_final=1e-4), "no effect with lr_schedule='constant'"),
        (dict(lr_schedule="cosine", lr_final=1.0), "must not exceed train.lr"),
        (dict(lr_schedule="cosine", lr_final=0.0), "lr_final must be a positive number"),
    ],
)
def test_bad_schedules_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_train_spec(TrainSpec(lr=1e-3, **kwargs))



def test_kl_beta_rises_linearly_to_one():
    assert [kl_beta(t, 4) for t in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert kl_beta(1, 0) == 1.0
