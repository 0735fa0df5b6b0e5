"""SVI with SGVB estimators A/B: training, reproducibility, resume, divergence, early stopping."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

import inference.svi as svi
import pyro_vae.sources as sources
from inference.objectives import OBJECTIVES, describe_kl, kl_mode, make_objective
from inference.svi import fit
from inference.training import kl_beta, learning_rate, load_checkpoint, vae_state
from pyro_vae import build_vae
from pyro_vae.data import DataSplits, load_dataset
from pyro_vae.errors import ConfigError, DataError, TrainingError
from pyro_vae.spec import TrainSpec

SMALL = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [32]}, decoder={"name": "mlp", "hidden": [32]})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarize="dynamic")


def small_vae(data, seed=0, **overrides):
    return build_vae(data_dim=data.feature_dim, seed=seed, **{**SMALL, **overrides})


def spec(**kw):
    return TrainSpec(**{"epochs": 3, "lr": 1e-2, "batch_size": 100, "seed": 0, **kw})


def values(history):
    """The reproducible part of a history (seconds are wall time)."""
    return [(r.epoch, r.train_elbo, r.val_elbo, r.beta) for r in history]


def assert_same_params(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def per_datapoint_elbo(vae, x):
    """One-sample estimator-A ELBO of each row: log p(x|z) + log p(z) - log q(z|x), z ~ q(z|x)."""
    with torch.no_grad():
        q = vae.posterior(x)
        z = q.sample()
        return vae.decode(z).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)


# ----------------------------------------------------------------------------- objectives
def test_registry_names_trace_and_meanfield_and_lists_them_for_unknown_names():
    assert {"trace", "meanfield"} <= set(OBJECTIVES.names())
    elbo = make_objective("meanfield", 3)
    assert isinstance(elbo, pyro.infer.TraceMeanField_ELBO) and elbo.num_particles == 3
    assert elbo.vectorize_particles and make_objective("trace").max_plate_nesting == 1
    # estimators A and B are Pyro's own ELBOs, not subclasses with private overrides
    assert type(make_objective("trace")) is pyro.infer.Trace_ELBO
    assert type(make_objective("meanfield")) is pyro.infer.TraceMeanField_ELBO
    with pytest.raises(ConfigError) as info:
        make_objective("elbo_of_dreams")
    for name in OBJECTIVES.names():
        assert name in str(info.value)


@pytest.mark.parametrize("elbo", OBJECTIVES.names())
def test_every_objective_trains(digits, elbo):
    result = fit(small_vae(digits), digits, spec(elbo=elbo, epochs=6), progress=False)
    first, last = result.history[0].val_elbo, result.history[-1].val_elbo
    # Each validation ELBO is a mean over N_val datapoints; its Monte Carlo noise is at most the
    # per-datapoint standard deviation / sqrt(N_val), so a difference of two has at most sqrt(2) x that.
    torch.manual_seed(0)
    per_point = per_datapoint_elbo(result.vae, digits.val)
    se = float(per_point.std()) / math.sqrt(len(per_point))
    assert last - first > 3 * math.sqrt(2) * se, (first, last, se)
    assert all(math.isfinite(r.train_elbo) for r in result.history)
    assert result.stopped == "completed" and len(result.history) == 6


def test_num_particles_and_samples_evaluated(digits):
    result = fit(small_vae(digits), digits, spec(elbo="trace", num_particles=3, epochs=2), progress=False)
    assert result.samples_evaluated == 2 * digits.train.shape[0] * 3
    assert result.wall_time > 0


# ----------------------------------------------------------------------------- seeds
def test_same_seed_same_history_and_parameters(digits):
    a = fit(small_vae(digits), digits, spec(), progress=False)
    b = fit(small_vae(digits), digits, spec(), progress=False)
    assert values(a.history) == values(b.history)
    assert_same_params(a.vae, b.vae)


def test_different_seed_different_history(digits):
    a = fit(small_vae(digits), digits, spec(seed=0), progress=False)
    b = fit(small_vae(digits), digits, spec(seed=1), progress=False)
    assert all(ra.train_elbo != rb.train_elbo for ra, rb in zip(a.history, b.history))
    assert not torch.equal(a.vae.decoder[0].weight, b.vae.decoder[0].weight)


def test_two_vaes_never_share_parameters(digits):
    one, two = small_vae(digits, seed=1), small_vae(digits, seed=2)
    two_before = {k: v.clone() for k, v in two.state_dict().items()}
    one_before = {k: v.clone() for k, v in one.state_dict().items()}
    fit(one, digits, spec(epochs=1), progress=False)
    assert all(torch.equal(v, two_before[k]) for k, v in two.state_dict().items())
    assert not all(torch.equal(v, one_before[k]) for k, v in one.state_dict().items())
    one_after = {k: v.clone() for k, v in one.state_dict().items()}
    fit(two, digits, spec(epochs=1), progress=False)
    assert all(torch.equal(v, one_after[k]) for k, v in one.state_dict().items())
    assert len(pyro.get_param_store().keys()) == 0


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("optimizer", ["adam", "clipped_adam"])
def test_resume_equals_uninterrupted(digits, tmp_path, optimizer):
    train = spec(epochs=4, kl_warmup_epochs=2, optimizer=optimizer, patience=3)
    full = fit(small_vae(digits), digits, train, run_dir=tmp_path / "full", progress=False)

    first = fit(small_vae(digits), digits, spec(epochs=2, kl_warmup_epochs=2, optimizer=optimizer, patience=3),
                run_dir=tmp_path / "split", progress=False)
    assert len(first.history) == 2
    torch.rand(1000), pyro.set_rng_seed(12345)  # another job disturbs every RNG between sessions
    fresh = small_vae(digits, seed=99)  # different initial weights: all state must come from the checkpoint
    resumed = fit(fresh, digits, train, run_dir=tmp_path / "split", resume=True, progress=False)

    assert values(resumed.history) == values(full.history)
    assert_same_params(resumed.vae, full.vae)
    assert (resumed.best_epoch, resumed.best_val_elbo) == (full.best_epoch, full.best_val_elbo)
    assert resumed.samples_evaluated == full.samples_evaluated
    last_full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    last_split = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    for k, v in last_full["vae"].items():
        assert torch.equal(v, last_split["vae"][k])

    again = fit(small_vae(digits), digits, train, run_dir=tmp_path / "split", resume=True, progress=False)
    assert again.stopped == "resumed_complete"
    assert values(again.history) == values(full.history)
    assert_same_params(again.vae, full.vae)


def test_checkpoint_layout(digits, tmp_path):
    fit(small_vae(digits), digits, spec(epochs=2), run_dir=tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert {"vae", "modules", "optimizers", "param_store", "rng", "batch_generator", "epoch", "history", "best", "spec"} <= set(ckpt)
    assert set(ckpt["modules"]) == {"program"} and set(ckpt["optimizers"]) == {"theta"}
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2 and ckpt["spec"]["epochs"] == 2
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == ckpt["best"]["epoch"]
    assert vae_state(ckpt, "last") is ckpt["vae"] and vae_state(ckpt, "best") is ckpt["best"]["vae"]
    for k, v in vae_state(best, "last").items():
        assert torch.equal(v, vae_state(ckpt, "best")[k])


def test_resume_without_checkpoint_or_with_changed_settings(digits, tmp_path):
    with pytest.raises(ConfigError, match="without --resume"):
        fit(small_vae(digits), digits, spec(), run_dir=tmp_path, resume=True, progress=False)
    fit(small_vae(digits), digits, spec(epochs=1), run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"lr: 0\.01 -> 0\.5"):
        fit(small_vae(digits), digits, spec(epochs=2, lr=0.5), run_dir=tmp_path, resume=True, progress=False)
    fewer = DataSplits("digits", digits.train[:500], digits.val, digits.test, None, None, None, (8, 8), "dynamic")
    with pytest.raises(ConfigError, match="different data"):
        fit(small_vae(digits), fewer, spec(epochs=2), run_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ConfigError, match="different model"):
        fit(small_vae(digits, latent_dim=3), digits, spec(epochs=2), run_dir=tmp_path, resume=True, progress=False)


# ----------------------------------------------------------------------------- divergence
def poison_decoder(vae, monkeypatch, at_epoch, at_step):
    """Make the decoder output NaN from training step ``at_step`` of epoch ``at_epoch`` on."""
    state = {"epoch": 0, "step": 0}
    real_batches = sources.batches  # the tensor source's epoch (pyro_vae.sources) calls it

    def counting_batches(*args, **kwargs):
        state["epoch"] += 1
        state["step"] = 0
        for batch in real_batches(*args, **kwargs):
            state["step"] += 1
            yield batch

    def hook(module, inputs, output):
        if (state["epoch"], state["step"]) >= (at_epoch, at_step):
            return output * float("nan")
        return output

    monkeypatch.setattr(sources, "batches", counting_batches)
    vae.decoder.register_forward_hook(hook)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("validate_every_step", [False, True])
def test_nan_stops_with_last_good_checkpoint_intact(digits, tmp_path, monkeypatch, validate_every_step):
    vae = small_vae(digits)
    poison_decoder(vae, monkeypatch, at_epoch=2, at_step=4)
    with pytest.raises(TrainingError) as info:
        fit(vae, digits, spec(epochs=4, validate_every_step=validate_every_step), run_dir=tmp_path, progress=False)
    message = str(info.value)
    for part in ("epoch 2, step 4", "last.pt", "(epoch 1)", "lr", "clipped_adam", "kl_warmup_epochs", "scaling"):
        assert part in message, part
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    for k, v in vae.state_dict().items():  # in memory: restored to the end of epoch 1
        assert torch.equal(v, ckpt["vae"][k]) and torch.isfinite(v).all()
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_in_first_epoch_restores_initial_parameters(digits, monkeypatch):
    vae = small_vae(digits)
    initial = {k: v.clone() for k, v in vae.state_dict().items()}
    poison_decoder(vae, monkeypatch, at_epoch=1, at_step=3)
    with pytest.raises(TrainingError, match="no checkpoint.*initial values"):
        fit(vae, digits, spec(), progress=False)
    assert all(torch.equal(v, initial[k]) for k, v in vae.state_dict().items())


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_stops_and_restores_best(digits, tmp_path, monkeypatch):
    scripted = iter([-30.0, -29.0, -29.5, -29.2, -28.0, -27.0])  # best at epoch 2, then 2 worse epochs
    monkeypatch.setattr(svi, "mean_elbo", lambda *args, **kwargs: next(scripted))
    result = fit(small_vae(digits), digits, spec(epochs=6, patience=2), run_dir=tmp_path, progress=False)
    assert result.stopped == "early_stopping"
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert (result.best_epoch, result.best_val_elbo) == (2, -29.0)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert best["epoch"] == 2 and last["epoch"] == 4
    for k, v in result.vae.state_dict().items():
        assert torch.equal(v, best["vae"][k])
    assert not all(torch.equal(v, last["vae"][k]) for k, v in result.vae.state_dict().items())
    again = fit(small_vae(digits), digits, spec(epochs=6, patience=2), run_dir=tmp_path, resume=True, progress=False)
    assert again.stopped == "resumed_complete" and again.best_epoch == 2


def test_patience_without_validation_split_is_refused(digits):
    no_val = DataSplits("d", digits.train, digits.val[:0], digits.test, None, None, None, (8, 8), "dynamic")
    with pytest.raises(ConfigError, match="validation split"):
        fit(small_vae(digits), no_val, spec(patience=2), progress=False)
    result = fit(small_vae(digits), no_val, spec(epochs=2), progress=False)
    assert result.best_val_elbo is None and result.best_epoch == 2
    assert all(r.val_elbo is None for r in result.history)


# ----------------------------------------------------------------------------- KL warm-up
def test_kl_warmup_betas_rise_stay_positive_and_reach_one(digits, monkeypatch):
    vae = small_vae(digits)
    seen = []
    model = vae.model

    def recording_model(x=None, **kwargs):
        if kwargs.get("num_data") is not None:  # training steps only
            seen.append(kwargs["beta"])
        return model(x, **kwargs)

    vae.model = recording_model
    result = fit(vae, digits, spec(epochs=4, kl_warmup_epochs=2), progress=False)
    steps = math.ceil(digits.train.shape[0] / 100)
    assert len(seen) == 4 * steps
    assert seen[0] == pytest.approx(1 / (2 * steps)) and all(b > 0 for b in seen)
    assert all(b2 >= b1 for b1, b2 in zip(seen, seen[1:]))
    assert seen[2 * steps - 1] == 1.0 and seen[2 * steps - 2] < 1.0
    assert [r.beta for r in result.history] == [0.5, 1.0, 1.0, 1.0]
    assert kl_beta(5, 0) == 1.0


# ----------------------------------------------------------------------------- learning-rate schedule
def test_each_epoch_runs_at_its_scheduled_rate_and_resume_keeps_the_schedule(digits, tmp_path, monkeypatch):
    seen = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    train = spec(epochs=4, lr_schedule="exponential", lr_final=1e-4)
    full = fit(small_vae(digits), digits, train, run_dir=tmp_path / "full", progress=False)
    steps = math.ceil(digits.train.shape[0] / 100)
    expected = [learning_rate(train, e) for e in range(1, 5)]
    assert seen == [r for r in expected for _ in range(steps)]
    assert [r.lr for r in full.history] == expected

    # interrupt the same 4-epoch run during epoch 3's validation, then resume: exactly the full run
    mean_elbo, calls = svi.mean_elbo, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return mean_elbo(*args, **kwargs)

    monkeypatch.setattr(svi, "mean_elbo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(small_vae(digits), digits, train, run_dir=tmp_path / "split", progress=False)
    monkeypatch.setattr(svi, "mean_elbo", mean_elbo)
    with pytest.raises(ConfigError, match="lr_final"):  # a changed schedule is not the same run
        fit(small_vae(digits), digits, spec(epochs=4, lr_schedule="exponential", lr_final=1e-3),
            run_dir=tmp_path / "split", resume=True, progress=False)
    resumed = fit(small_vae(digits, seed=5), digits, train, run_dir=tmp_path / "split", resume=True, progress=False)
    assert [r.lr for r in resumed.history] == expected
    assert values(resumed.history) == values(full.history)
    assert_same_params(resumed.vae, full.vae)

# ----------------------------------------------------------------------------- KL mode and data checks
def test_kl_mode(digits):
    assert kl_mode(small_vae(digits)) == "analytic"
    student = small_vae(digits, prior="student_t")
    assert kl_mode(student) == "monte_carlo"
    assert "StudentT" in describe_kl(student)


def test_data_is_checked_against_the_likelihood(digits):
    grey = DataSplits("d", digits.train, digits.train[:50], digits.train[:50], None, None, None, (8, 8), "none")
    with pytest.raises(DataError, match="bernoulli"):
        fit(small_vae(digits), grey, spec(epochs=1), progress=False)
    scaled = DataSplits("d", digits.train * 16, digits.val, digits.test, None, None, None, (8, 8), "dynamic")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        fit(small_vae(digits), scaled, spec(epochs=1), progress=False)


def test_each_epoch_records_the_validation_elbo_terms(digits):
    """reconstruction - KL is the validation ELBO: equal up to the Monte Carlo error of two one-draw averages."""
    result = fit(small_vae(digits), digits, spec(elbo="trace", epochs=2), progress=False)
    torch.manual_seed(0)
    se = float(per_datapoint_elbo(result.vae, digits.val).std()) / math.sqrt(len(digits.val))
    for r in result.history:
        terms = r.stats["val_reconstruction"] - r.stats["val_kl"]
        assert r.stats["val_kl"] > 0 and abs(terms - r.val_elbo) < 4 * math.sqrt(2) * se, (terms, r.val_elbo, se)
