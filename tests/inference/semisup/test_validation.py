"""The classifier's validation scores: exact by hand, one pass per epoch, the monitored one returned."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from inference.semisup.validation import CHUNK, class_log_likelihood, classifier_validation
from pyro_vae.errors import ConfigError
from pyro_vae.spec import TrainSpec


class CountingClassifier(nn.Module):
    """q(y | x) = Cat(softmax(x)) on 3 classes; counts the rows it classifies."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def classify(self, x: torch.Tensor) -> dist.Categorical:
        self.rows += x.shape[0]
        return dist.Categorical(logits=x)


def rows() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    return x, torch.tensor([0, 2, 2, 1])


def test_the_scores_are_the_mean_log_q_and_the_accuracy_by_hand():
    x, y = rows()
    log_q, accuracy = class_log_likelihood(CountingClassifier(), x, y)
    by_hand = torch.log_softmax(x, -1)[torch.arange(4), y].mean()
    assert log_q == pytest.approx(float(by_hand), abs=1e-6)
    assert accuracy == 0.5  # rows 0 and 2 are right, rows 1 and 3 are not


def test_chunks_give_the_same_scores_as_one_pass():
    torch.manual_seed(0)
    x, y = torch.randn(CHUNK + 7, 3), torch.randint(0, 3, (CHUNK + 7,))
    log_q, accuracy = class_log_likelihood(CountingClassifier(), x, y)
    assert log_q == pytest.approx(float(torch.log_softmax(x, -1)[torch.arange(x.shape[0]), y].mean()), abs=1e-5)
    assert accuracy == pytest.approx(float((x.argmax(-1) == y).double().mean()))


@pytest.mark.parametrize("monitor, key", [(None, "val_accuracy"), ("accuracy", "val_accuracy"), ("log_q", "val_log_q")])
def test_validate_returns_the_monitored_score_and_report_reuses_its_pass(monitor, key):
    x, y = rows()
    classifier = CountingClassifier()
    scores = classifier_validation(classifier, x, y, TrainSpec(monitor=monitor), "test")
    assert scores.monitor == (monitor or "accuracy")
    value = scores.validate()
    report = scores.report()
    assert classifier.rows == 4  # one pass over the 4 validation rows, not two
    assert report[key] == value
    assert set(report) == {"val_accuracy", "val_log_q"} and all(math.isfinite(v) for v in report.values())


def test_a_report_without_a_validation_since_the_last_scores_afresh():
    x, y = rows()
    classifier = CountingClassifier()
    scores = classifier_validation(classifier, x, y, TrainSpec(), "test")
    scores.validate()
    first = scores.report()
    second = scores.report()
    assert classifier.rows == 8 and first == second


def test_a_score_the_classifier_does_not_offer_is_refused_naming_the_choices():
    x, y = rows()
    with pytest.raises(ConfigError, match=r"train.monitor='elbo'.*accuracy, log_q"):
        classifier_validation(CountingClassifier(), x, y, TrainSpec(monitor="elbo"), "test")
