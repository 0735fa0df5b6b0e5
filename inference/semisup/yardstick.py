r"""The yardstick for M2, extended: accuracy, calibration, and log p(x) with the label summed out exactly.

For a test row x_i and C classes:

* prediction yhat_i = argmax_y q(y | x_i); accuracy = (1/N) sum_i [yhat_i = y_i], error = 1 - accuracy,
  and the confusion matrix M[a, b] = #{i : y_i = a, yhat_i = b};
* calibration of q(y | x) (Guo et al. 2017): with confidence c_i = max_y q(y | x_i) and equal-width
  bins B_1..B_M of [0, 1], the expected calibration error

      ECE = sum_m (|B_m| / N) | acc(B_m) - conf(B_m) |,

  acc and conf the mean correctness and confidence of the rows in the bin (the reliability diagram
  plots one against the other);
* the held-out log-likelihood with y summed out exactly, each class's term by importance sampling
  with K draws z_ick ~ q(z | x_i, c) (log w from :func:`inference.evaluate.log_importance_weights`,
  the one log-weight function, called with y = c observed):

      log p(x_i) ~= logsumexp_c [ logsumexp_k log w_ick - log K ],
      log w_ick = log p(c) + log p(z_ick) + log p(x_i | c, z_ick) - log q(z_ick | x_i, c),

  a stratified estimate (a lower bound in expectation, like the IWAE bound) with the standard
  error of its mean over the rows; PSIS k-hat (Yao et al. 2018) of the pooled C K weights of a row
  is the k-hat of the mixture proposal (1/C) sum_c delta_c q(z | x, c) (k-hat is scale-free).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from inference.evaluate import Estimate, log_importance_weights
from inference.progress import bar
from pyro_vae.checks import positive_int

MAX_FLOATS = 2e7  # rows per chunk: K x rows x D stays below this
KHAT_GOOD, KHAT_BAD = 0.5, 0.7  # inference.diagnostics.psis's thresholds (Yao et al. 2018); that package imports run folders


class Calibration(NamedTuple):
    """ECE and the reliability diagram's bins: mean confidence, accuracy and row count of each bin."""

    ece: float
    confidence: list[float]
    accuracy: list[float]
    count: list[int]


class SummedLogLikelihood(NamedTuple):
    """log p(x) with y summed out (an :class:`~inference.evaluate.Estimate`) and each row's PSIS k-hat."""

    estimate: Estimate
    khat: np.ndarray


@torch.no_grad()
def class_probabilities(program: nn.Module, x: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """q(y | x) for every row, (N, C)."""
    return torch.cat([program.classify(x[s:s + chunk]).probs for s in range(0, x.shape[0], chunk)])


def calibration(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> Calibration:
    """ECE over ``bins`` equal-width confidence bins (module docstring); empty bins are left out of the lists."""
    positive_int("bins", bins)
    conf, pred = probs.max(-1)
    right = (pred == labels).double()
    which = torch.clamp((conf * bins).long(), max=bins - 1)
    ece, out = 0.0, ([], [], [])
    for b in range(bins):
        rows = which == b
        n = int(rows.sum())
        if n == 0:
            continue
        c, a = float(conf[rows].double().mean()), float(right[rows].mean())
        ece += n / len(labels) * abs(a - c)
        for lst, v in zip(out, (c, a, n)):
            lst.append(v)
    return Calibration(ece, *out)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """M[a, b] = number of rows of class a predicted as b, (C, C) int64."""
    return torch.bincount(labels * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


@torch.no_grad()
def summed_log_likelihood(program: nn.Module, x: torch.Tensor, *, num_samples: int = 1000,
                          progress: bool = False) -> SummedLogLikelihood:
    """log p(x_i) = log sum_y p(y) p(x_i | y), each p(x_i | y) by IS with q(z | x_i, y) (module docstring)."""
    from inference.diagnostics.psis import pareto_smooth  # ArviZ, imported when scoring (and no import cycle)

    positive_int("num_samples", num_samples)
    C, K = program.num_classes, num_samples
    rows = max(1, int(MAX_FLOATS // (K * x.shape[1])))
    values, khats = [], []
    for start in bar(range(0, x.shape[0], rows), enabled=progress, desc="log p(x), y summed out", leave=False):
        xb = x[start:start + rows]
        log_w = torch.stack([log_importance_weights(program.model, program.guide, xb, K, y=torch.tensor(c, device=xb.device))
                             for c in range(C)])  # (C, K, B)
        values.append((log_w.logsumexp(1) - math.log(K)).logsumexp(0))
        khats.append(pareto_smooth(log_w.reshape(C * K, -1).T)[1])
    return SummedLogLikelihood(Estimate.from_values(torch.cat(values), K), np.concatenate(khats))


def semi_supervised_metrics(program: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, num_samples: int = 1000,
                            bins: int = 15, progress: bool = False) -> dict[str, Any]:
    """Accuracy, error, ECE and reliability bins, confusion matrix, log p(x) (y summed out) with k-hat, as plain numbers."""
    was = program.training
    program.eval()
    try:
        probs = class_probabilities(program, x)
        pred = probs.argmax(-1)
        cal = calibration(probs, labels, bins)
        ll = summed_log_likelihood(program, x, num_samples=num_samples, progress=progress)
    finally:
        program.train(was)
    accuracy = float((pred == labels).double().mean())
    finite = ll.khat[np.isfinite(ll.khat)]
    return {
        "accuracy": accuracy, "error": 1.0 - accuracy, "n": int(len(labels)),
        "accuracy_stderr": math.sqrt(accuracy * (1 - accuracy) / len(labels)),
        "ece": cal.ece, "reliability": cal._asdict(),
        "confusion": confusion_matrix(pred, labels, program.num_classes).tolist(),
        "log_likelihood_summed": {"mean": ll.estimate.mean, "stderr": ll.estimate.stderr, "n": ll.estimate.n,
                                  "num_samples": num_samples},
        "khat": {"max": float(finite.max()) if finite.size else float("-inf"),
                 "fraction_good": float((ll.khat <= KHAT_GOOD).mean()),
                 "fraction_bad": float((ll.khat > KHAT_BAD).mean())},
    }


__all__ = ["Calibration", "SummedLogLikelihood", "class_probabilities", "calibration", "confusion_matrix",
           "summed_log_likelihood", "semi_supervised_metrics"]
