"""Semi-supervised M2: the enumerated ELBO is the explicit sum over classes, the summed-out log p(x) is exact on a
linear-Gaussian mixture, mixed batches see every labelled row, and M2 beats the labelled-only classifier."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from torch.nn.functional import softplus

from inference import semisup, svi
from inference.objectives import ClassificationLoss, make_objective
from inference.semisup.baseline import baseline_for, fit_classifier
from inference.semisup.batches import mixed_batches
from inference.semisup.yardstick import calibration, confusion_matrix, summed_log_likelihood
from pyro_vae import build_program, load_dataset
from pyro_vae.labels import UNLABELLED, labelled_rows, semi_supervised
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.spec import ModelSpec, TrainSpec

TINY = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [5]}, decoder={"name": "mlp", "hidden": [5]})


def tiny_m2(classes: int = 3, data_dim: int = 4, **model):
    return build_program(ModelSpec(program={"name": "m2", "classes": classes}, **{**TINY, **model}),
                         data_dim=data_dim, seed=0)


def explicit_unlabelled_elbo(program, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """sum_i [ sum_y q(y|x_i) (log p(x_i|y,z_iy) + log p(y) + log p(z_iy) - log q(z_iy|x_i,y)) - sum_y q log q ],
    z_iy = mu(x_i, y) + sigma(x_i, y) eps[y, i], written out with torch only."""
    C = program.num_classes
    log_q_y = F.log_softmax(program.classifier(x), -1)  # (B, C)
    total = torch.zeros(x.shape[0])
    for c in range(C):
        onehot = F.one_hot(torch.full((x.shape[0],), c), C).float()
        loc, rho = program.encoder(torch.cat([x, onehot], -1)).split(program.latent_dim, -1)
        scale = softplus(rho) + 1e-4
        z = loc + scale * eps[c]
        log_q_z = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        log_p_z = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        logits = program.decoder(torch.cat([z, onehot], -1))
        log_p_x = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
        term = log_p_x + math.log(1.0 / C) + log_p_z - log_q_z
        total = total + log_q_y[:, c].exp() * (term - log_q_y[:, c])
    return total.sum()


def test_the_enumerated_elbo_is_the_explicit_sum_over_classes_value_and_gradient():
    program = tiny_m2()
    x = torch.rand(6, 4).round()
    objective = make_objective("enum")
    pyro.set_rng_seed(11)
    loss = objective.differentiable_loss(program.model, program.guide, x=x)
    grads = torch.autograd.grad(loss, list(program.parameters()), allow_unused=True)
    pyro.set_rng_seed(11)  # the same standard-normal draws, shaped (C, B, d) as the enumerated guide draws them
    eps = torch.distributions.Normal(torch.zeros(3, 6, 2), torch.ones(3, 6, 2)).rsample()
    explicit = -explicit_unlabelled_elbo(program, x, eps)
    expected = torch.autograd.grad(explicit, list(program.parameters()), allow_unused=True)
    assert float(loss.detach()) == pytest.approx(float(explicit.detach()), rel=1e-5)
    for g, e in zip(grads, expected):
        if e is None:
            assert g is None or float(g.abs().max()) == 0.0
        else:
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_decoding_without_a_label_is_the_mixture_over_classes():
    program = tiny_m2()
    z = torch.randn(5, 2)
    per_class = torch.stack([program.decode(z, torch.full((5,), c)).mean for c in range(3)])
    torch.testing.assert_close(program.decode(z).mean, per_class.mean(0))  # pi = 1/C
    x = torch.rand(5, 4).round()
    expected = torch.stack([program.decode(z, torch.full((5,), c)).log_prob(x) for c in range(3)]).logsumexp(0) - math.log(3)
    torch.testing.assert_close(program.decode(z).log_prob(x), expected)


def test_the_classification_term_is_alpha_times_the_labelled_mean_log_q():
    program = tiny_m2()
    x, y = torch.rand(4, 4).round(), torch.tensor([0, 2, 1, 1])
    expected = F.log_softmax(program.classifier(x), -1)[torch.arange(4), y].sum()
    # 4 of 10 labelled rows in the batch: scale 10 / 4; weight alpha / 10 makes it alpha x the mean over 10 rows
    value = ClassificationLoss(7.0 / 10).differentiable_loss(program.model, program.guide, x=x, y=y, num_data=10)
    assert float(value.detach()) == pytest.approx(-7.0 / 10 * 10 / 4 * float(expected.detach()), rel=1e-6)


def linear_gaussian_mixture():
    """M2 with p(x | y, z) = N(W z + b_y, s^2 I), W with orthogonal columns, and q(z | x, y) the exact posterior
    N(M^-1 W^T (x - b_y), s^2 M^-1), M = W^T W + s^2 I diagonal, so every importance weight equals p(x, y)."""
    s, D, d, C = 0.5, 3, 2, 3
    program = build_program(ModelSpec(program={"name": "m2", "classes": C}, latent_dim=d, likelihood={"name": "gaussian", "sigma": s},
                                      encoder="linear", decoder="linear", guide="diag_normal"), data_dim=D, seed=0)
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 2.0], [-2.0, 0.5, 1.0]])  # b_y, one row per class
    M = W.T @ W + s ** 2 * torch.eye(d)
    A = torch.linalg.solve(M, W.T)  # posterior mean A (x - b_y)
    post_sd = (s ** 2 / torch.diagonal(M)).sqrt()
    with torch.no_grad():
        program.decoder.weight.copy_(torch.cat([W, b.T], 1))
        program.decoder.bias.zero_()
        program.encoder.weight.zero_()
        program.encoder.weight[:d, :D] = A
        program.encoder.weight[:d, D:] = -(A @ b.T)
        program.encoder.bias.zero_()
        program.encoder.bias[d:] = torch.log(torch.expm1(post_sd - 1e-4))  # softplus(rho) + 1e-4 = sd
    covariance = W @ W.T + s ** 2 * torch.eye(D)
    exact = lambda x: torch.stack([torch.distributions.MultivariateNormal(b[c], covariance).log_prob(x)
                                   for c in range(C)]).logsumexp(0) - math.log(C)
    return program, exact


def test_the_summed_out_log_likelihood_is_exact_on_a_linear_gaussian_mixture():
    program, exact = linear_gaussian_mixture()
    x = torch.randn(7, 3) * 2
    result = summed_log_likelihood(program, x, num_samples=5)
    torch.testing.assert_close(result.estimate.values, exact(x), rtol=0, atol=2e-4)  # float32 round-off only
    assert result.khat.shape == (7,)


def test_mixed_batches_see_every_labelled_row_every_epoch():
    data = semi_supervised(load_dataset("digits", binarize="dynamic"), 30, seed=0)
    train = TrainSpec(batch_size=100)
    labelled = set(labelled_rows(data).tolist())
    gen = torch.Generator().manual_seed(0)
    stream = list(mixed_batches(data, train, gen))
    assert len(stream) == math.ceil(len(data.train) / 100)  # the loop's steps per epoch
    seen = {int(i) for b in stream for i in b["idx_labelled"]}
    assert seen == labelled
    unlabelled = torch.cat([b["idx"] for b in stream])
    assert sorted(unlabelled.tolist()) == (data.train_labels == UNLABELLED).nonzero().flatten().tolist()
    assert all(bool((b["y"] == data.train_labels[b["idx_labelled"]]).all()) for b in stream)
    assert set(torch.cat([b["x"] for b in stream]).unique().tolist()) <= {0.0, 1.0}  # dynamic binarization


@pytest.mark.parametrize("m", [7, 30])
def test_a_labelled_batch_size_puts_that_many_labelled_rows_in_every_step(m):
    data = semi_supervised(load_dataset("digits", binarize="dynamic"), 30, seed=0)
    stream = list(mixed_batches(data, TrainSpec(batch_size=100, labelled_batch_size=m), torch.Generator().manual_seed(0)))
    assert [b["idx_labelled"].numel() for b in stream] == [m] * math.ceil(len(data.train) / 100)
    counts = torch.bincount(torch.cat([b["idx_labelled"] for b in stream]), minlength=len(data.train))
    labelled = labelled_rows(data)
    assert set(counts.nonzero().flatten().tolist()) == set(labelled.tolist())
    passes = len(stream) * m / 30  # shuffles laid end to end: every row once per full pass, the last pass cut short
    assert int(counts[labelled].min()) == math.floor(passes) and int(counts[labelled].max()) == math.ceil(passes)
    if m == 30:  # m = L: every step holds every labelled row once
        assert all(sorted(b["idx_labelled"].tolist()) == sorted(labelled.tolist()) for b in stream)
    assert all(bool((b["y"] == data.train_labels[b["idx_labelled"]]).all()) for b in stream)


def refused_before_training(match: str, **train):
    """(data, program) after checking that M2's fit on 20 digit labels refuses ``train`` before any step."""
    data = semi_supervised(load_dataset("digits", binarize="dynamic", max_train=200), 20, seed=0)
    program = tiny_m2(classes=10, data_dim=64)
    before = {k: v.clone() for k, v in program.state_dict().items()}
    with pytest.raises(ConfigError, match=match):
        semisup.fit(program, data, TrainSpec(elbo="enum", epochs=1, **train), progress=False)
    assert all(torch.equal(before[k], v) for k, v in program.state_dict().items())  # no step was taken
    return data, program


def test_a_labelled_batch_size_is_refused_where_it_cannot_apply():
    data, program = refused_before_training(r"train.labelled_batch_size=21 is more than the 20 labelled training rows; "
                                            r"set labelled_batch_size \(--labelled-batch-size\) to at most 20",
                                            labelled_batch_size=21)
    vae = build_program(ModelSpec(latent_dim=2), data_dim=64, seed=0)
    with pytest.raises(ConfigError, match=r"train.labelled_batch_size=5 sets the labelled rows .* trains on unlabelled "
                                          r"rows only; drop it"):
        svi.fit(vae, load_dataset("digits", binarize="dynamic", max_train=200), TrainSpec(epochs=1, labelled_batch_size=5),
                progress=False)
    with pytest.raises(ConfigError, match=r"train.labelled_batch_size"):
        TrainSpec(labelled_batch_size=0)
    fit = semisup.fit(program, data, TrainSpec(elbo="enum", epochs=1, labelled_batch_size=20), progress=False)
    assert len(fit.history) == 1


def test_mixed_batches_draw_gaussian_rows_around_the_means_when_the_data_carry_sds():
    """train_sd (M1+M2 on draws of z): x = mean + sd eps per minibatch. Means 3, sds 2 on one column and 0 on the
    other: the drawn column's sample mean and variance over n draws are within 4 s.e. of 3 and 4 (s.e. 2 / sqrt(n)
    and 4 sqrt(2 / n)); the sd-0 column is the mean exactly; a fresh epoch draws afresh."""
    from dataclasses import replace

    data = semi_supervised(load_dataset("digits", binarize="none"), 30, seed=0)
    n_rows = data.train.shape[0]
    means = torch.full((n_rows, 2), 3.0)
    sd = torch.stack([torch.full((n_rows,), 2.0), torch.zeros(n_rows)], dim=1)
    drawn = replace(data, train=means, val=data.val[:, :2], test=data.test[:, :2], train_sd=sd)
    gen = torch.Generator().manual_seed(0)
    epoch = [torch.cat([b["x"], b["x_labelled"]]) for b in mixed_batches(drawn, TrainSpec(batch_size=100), gen)]
    x = torch.cat(epoch).double()
    n = x.shape[0]
    assert abs(float(x[:, 0].mean()) - 3.0) < 4 * 2.0 / n ** 0.5
    assert abs(float(x[:, 0].var()) - 4.0) < 4 * 4.0 * (2.0 / n) ** 0.5
    assert bool((x[:, 1] == 3.0).all())
    again = torch.cat([torch.cat([b["x"], b["x_labelled"]]) for b in mixed_batches(drawn, TrainSpec(batch_size=100), gen)])
    assert not torch.equal(again, torch.cat(epoch))
    with pytest.raises(DataError, match="train_sd must be"):
        replace(drawn, train_sd=sd[:10])


def test_calibration_and_confusion_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 1, 1])
    cal = calibration(probs, labels, bins=2)  # bins [0, .5), [.5, 1]: all four rows have confidence >= .6
    assert cal.count == [4] and cal.accuracy == [0.75]
    assert cal.ece == pytest.approx(abs(0.75 - (0.9 + 0.8 + 0.7 + 0.6) / 4))
    assert confusion_matrix(probs.argmax(-1), labels, 2).tolist() == [[1, 0], [1, 2]]


@pytest.mark.slow
def test_m2_beats_the_labelled_only_classifier_on_digits_with_50_labels():
    """Same network, same 50 labels (seed 0). The margin is twice the paired standard error of the difference of two
    accuracies on the same n test rows, sqrt((n01 + n10) / n^2 - d^2 / n), n01/n10 the rows only one gets right."""
    data = semi_supervised(load_dataset("digits", binarize="dynamic"), 50, seed=0)
    spec = ModelSpec(program={"name": "m2", "classes": 10}, latent_dim=16,
                     encoder={"name": "mlp", "hidden": [256], "activation": "softplus"},
                     decoder={"name": "mlp", "hidden": [256], "activation": "softplus"})
    program = build_program(spec, data_dim=64, seed=0)
    classifier = baseline_for(program, seed=0)
    semisup.fit(program, data, TrainSpec(elbo="enum", epochs=150, lr=3e-3, patience=30), progress=False)
    fit_classifier(classifier, data, TrainSpec(epochs=300, lr=3e-3, patience=30), progress=False)
    with torch.no_grad():
        right_m2 = program.classify(data.test).probs.argmax(-1) == data.test_labels
        right_base = classifier.classify(data.test).probs.argmax(-1) == data.test_labels
    n = len(data.test_labels)
    diff = float(right_m2.double().mean() - right_base.double().mean())
    discordant = int((right_m2 != right_base).sum())
    margin = 2 * math.sqrt(max(discordant / n ** 2 - diff ** 2 / n, 0.0))
    assert diff > margin, (diff, margin)


@pytest.mark.parametrize("monitor, key", [(None, "val_accuracy"), ("accuracy", "val_accuracy"), ("log_q", "val_log_q")])
def test_the_kept_epoch_is_the_first_best_of_the_monitored_validation_score(monitor, key):
    """M2 and the labelled-only floor keep the first epoch whose monitored score is highest, and hold its parameters:
    the kept program scores on the validation split exactly what that epoch recorded."""
    data = semi_supervised(load_dataset("digits", binarize="dynamic", max_train=300), 30, seed=0)
    spec = ModelSpec(program={"name": "m2", "classes": 10}, latent_dim=3, encoder={"name": "mlp", "hidden": [16]},
                     decoder={"name": "mlp", "hidden": [16]})
    program = build_program(spec, data_dim=64, seed=0)
    train = TrainSpec(elbo="enum", epochs=6, lr=1e-2, batch_size=50, monitor=monitor)
    floor = baseline_for(program, seed=0)
    for fit in (semisup.fit(program, data, train, progress=False),
                fit_classifier(floor, data, TrainSpec(epochs=6, lr=1e-2, batch_size=10, monitor=monitor),
                               progress=False)):
        scores = [r.stats[key] for r in fit.history]
        assert fit.monitor == (monitor or "accuracy")
        assert fit.best_epoch == fit.history[scores.index(max(scores))].epoch
        assert [r.val_elbo for r in fit.history] == scores  # the loop's validation score is the monitored one
        log_q, accuracy = semisup.class_log_likelihood(fit.vae, data.val, data.val_labels)
        assert {"val_accuracy": accuracy, "val_log_q": log_q}[key] == pytest.approx(max(scores), abs=1e-6)


def test_a_validation_score_the_method_does_not_offer_is_refused_before_training():
    data, program = refused_before_training(r"train.monitor='elbo' is not a validation score of M2; use one of: "
                                            r"accuracy, log_q", monitor="elbo")
    vae = build_program(ModelSpec(latent_dim=2), data_dim=64, seed=0)
    with pytest.raises(ConfigError, match=r"train.monitor='accuracy' is not a validation score of .*'elbo'"):
        svi.fit(vae, load_dataset("digits", binarize="dynamic", max_train=200), TrainSpec(epochs=1, monitor="accuracy"),
                progress=False)
    with pytest.raises(ConfigError, match=r"train.monitor must be null or the name of a validation score"):
        TrainSpec(monitor="")
    no_val = load_dataset("digits", binarize="dynamic", max_train=200, val_fraction=0.0)
    with pytest.raises(ConfigError, match=r"train.monitor='elbo' names a validation score, but .* has none here"):
        svi.fit(vae, no_val, TrainSpec(epochs=1, monitor="elbo"), progress=False)
    fit = semisup.fit(program, data, TrainSpec(elbo="enum", epochs=1), progress=False)
    with pytest.raises(ConfigError, match=r"cannot continue the given state: its best epoch was kept by "
                                          r"validation accuracy, this fit keeps it by log_q"):
        semisup.fit(program, data, TrainSpec(elbo="enum", epochs=2, monitor="log_q"), state=fit.state, progress=False)
