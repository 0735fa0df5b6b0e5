"""The one training loop with a task that is not SVI, and in-memory continuation (inference.training.loop)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from inference import svi
from inference.svi import fit as svi_fit
from inference.training import StepResult, Task, fit, gradient_step
from pyro_vae import build_vae
from pyro_vae.data import DataSplits, load_dataset
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.spec import TrainSpec


class Program(nn.Module):
    """Not a VAE: one weight vector w, loss (N / B) sum_i ||x_i - w||^2 / 2, minimized at the data mean."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d))


def splits(n: int = 200, d: int = 3, seed: int = 0) -> DataSplits:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + 2.0
    return DataSplits("synthetic", x, x[:0], x[:0], None, None, None, None, "none")


def mean_task(program: Program, n: int, **kwargs) -> Task:
    def loss(batch, beta):
        return (batch["x"] - program.w).pow(2).sum() / 2 * (n / batch["x"].shape[0])

    return Task(modules={"program": program},
                make_optimizers=lambda t: {"theta": torch.optim.SGD(program.parameters(), lr=t.lr)},
                step=gradient_step(loss), label="mean", **kwargs)


def test_any_task_runs_on_the_loop_and_reaches_its_optimum():
    """SGD on the mean-squared loss with lr 1 / N: w converges to the data mean (minibatch noise shrinks with lr)."""
    data = splits()
    program = Program(3)
    result = fit(mean_task(program, 200), data, TrainSpec(epochs=30, lr=1e-3, batch_size=50), progress=False)
    assert len(result.history) == 30 and result.stopped == "completed"
    assert torch.allclose(program.w.detach(), data.train.mean(0), atol=0.05)
    assert result.samples_evaluated == 30 * 200 and result.best_val_elbo is None
    assert result.history[-1].train_elbo > result.history[0].train_elbo


def test_a_non_finite_step_restores_the_last_good_epoch():
    data = splits()
    program = Program(3)
    calls = {"n": 0}
    good = mean_task(program, 200)

    def step(state, batch, beta):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, step 2 of 4
            with torch.no_grad():
                program.w.fill_(float("nan"))
            return StepResult(float("nan"), 0)
        return good.step(state, batch, beta)

    with pytest.raises(TrainingError, match="epoch 2, step 2/4"):
        fit(Task(good.modules, good.make_optimizers, step), data, TrainSpec(epochs=3, lr=1e-3, batch_size=50),
            progress=False)
    assert bool(torch.isfinite(program.w).all())


def test_max_seconds_stops_mid_epoch_and_records_the_batches_done():
    data = splits(n=400)
    program = Program(3)
    task = mean_task(program, 400)

    def slow(state, batch, beta):
        time.sleep(0.02)
        return task.step(state, batch, beta)

    result = fit(Task(task.modules, task.make_optimizers, slow), data, TrainSpec(epochs=100, lr=1e-3, batch_size=50),
                 max_seconds=0.25, progress=False)
    assert result.stopped == "budget" and len(result.history) < 100
    last = result.history[-1]
    assert 1 <= last.stats["batches"] < 8 and math.isfinite(last.train_elbo)


def test_state_and_resume_together_are_refused(tmp_path):
    program = Program(3)
    first = fit(mean_task(program, 200), splits(), TrainSpec(epochs=1, lr=1e-3, batch_size=50), progress=False)
    with pytest.raises(ConfigError, match="not both"):
        fit(mean_task(program, 200), splits(), TrainSpec(epochs=2, lr=1e-3, batch_size=50), state=first.state,
            run_dir=tmp_path, resume=True, progress=False)


def test_continuing_in_memory_equals_one_uninterrupted_fit(monkeypatch):
    """A fit continued from its state (what budgets do) is the uninterrupted fit: same history, same parameters.

    The validation scores are scripted so that the first part ends after a worse epoch: its result
    holds the best (epoch 1) parameters, and the continuation must start from epoch 2's."""
    scores = iter([-10.0, -20.0, -15.0, -12.0, -10.0, -20.0, -15.0, -12.0])
    monkeypatch.setattr(svi, "mean_elbo", lambda *args, **kwargs: next(scores))
    digits = load_dataset("digits", binarize="dynamic")
    spec = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [16]}, decoder={"name": "mlp", "hidden": [16]})
    train = TrainSpec(epochs=4, lr=1e-2, batch_size=100, seed=0)
    whole = svi_fit(build_vae(data_dim=64, seed=0, **spec), digits, train, progress=False)
    part = svi_fit(build_vae(data_dim=64, seed=0, **spec), digits, TrainSpec(epochs=2, lr=1e-2, batch_size=100, seed=0),
                   progress=False)
    rest = svi_fit(part.vae, digits, train, state=part.state, progress=False)
    values = [(r.epoch, r.train_elbo, r.val_elbo) for r in whole.history]
    assert part.best_epoch == 1 and rest.best_epoch == 1
    assert [(r.epoch, r.train_elbo, r.val_elbo) for r in rest.history] == values
    for k, v in whole.state.last["program"].items():
        assert torch.equal(v, rest.state.last["program"][k]), k


def test_a_continued_fit_is_exact_whatever_draws_random_numbers_in_between(monkeypatch):
    """The state carries the RNG streams: random draws between two sessions (here a check that runs the
    guide, and a stray torch.randn) must not change the continued fit (meanfield, whose check traces the guide)."""
    digits = load_dataset("digits", binarize="dynamic")
    spec = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [8]}, decoder={"name": "mlp", "hidden": [8]})

    def train(epochs):
        return TrainSpec(elbo="meanfield", epochs=epochs, lr=1e-2, batch_size=200, seed=0)

    whole = svi_fit(build_vae(data_dim=64, seed=0, **spec), digits, train(3), progress=False)
    part = svi_fit(build_vae(data_dim=64, seed=0, **spec), digits, train(1), progress=False)
    torch.randn(10)
    rest = svi_fit(part.vae, digits, train(3), state=part.state, progress=False)
    assert [r.train_elbo for r in rest.history] == [r.train_elbo for r in whole.history]


def test_max_seconds_stops_an_epoch_of_one_step_too():
    """With one minibatch per epoch the budget must still stop the fit (after that epoch, nothing more)."""
    data = splits(n=100)
    program = Program(3)
    result = fit(mean_task(program, 100), data, TrainSpec(epochs=40, lr=1e-3, batch_size=100), max_seconds=1e-9,
                 progress=False)
    assert result.stopped == "budget" and len(result.history) == 1 and "batches" not in result.history[0].stats
