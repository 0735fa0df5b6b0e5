r"""Conditional programs in run folders: their test metrics and figures when trained by ``pyro-vae train``.

A conditional program (``cvae``, ``cvae_baseline``) is trained by the one SVI loop like any program;
its test metrics are the completion yardstick on the test split (conditional log-likelihood
log p(y | c) by IS with K particles, ELBO estimators A and B, active units of E_q[z | c, y] and the
KL per latent dimension E_x KL(q(z_u | c, y) || p(z_u | c)) where both are diagonal Gaussians), and
its figures are the ELBO curves and a completion grid of test rows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.distributions import Independent, Normal, kl_divergence

from inference import evaluate
from inference.completion.yardstick import score_conditional
from pyro_vae.checks import positive_int
from pyro_vae.masks import pooled_shape
from pyro_vae.plots.canvas import FIGURE_NAMES, evaluating
from pyro_vae.plots.completion import plot_completion_grid
from pyro_vae.plots.curves import plot_elbo_curves
from pyro_vae.rng import seeded

QUANTITY = "log p(y | c)"
GRID_ROWS, GRID_SAMPLES = 8, 8


def _kl_per_dim(program: Any, x: torch.Tensor) -> list[float]:
    """(1/N) sum_i KL(q(z_u | c_i, y_i) || p(z_u | c_i)) per dimension u, for diagonal Gaussians; [] otherwise."""
    if not hasattr(program, "posterior"):
        return []
    with torch.no_grad():
        q, p = program.posterior(x), program.prior_given(program.task.condition(x))
        if not all(isinstance(d, Independent) and isinstance(d.base_dist, Normal) for d in (q, p)):
            return []
        return [float(v) for v in kl_divergence(q.base_dist, p.base_dist).mean(0)]


def conditional_test_metrics(program: Any, x: torch.Tensor, *, num_samples: int, progress: bool = True
                             ) -> dict[str, Any]:
    """The test metrics of a conditional program on rows ``x``, in the keys of :func:`inference.run.test_metrics`."""
    t0 = time.perf_counter()
    with evaluating(program):
        score = score_conditional(program, x, num_samples=num_samples, elbo_particles=10)
        elbo_b = evaluate.elbo(program.model, program.guide, x, estimator="B", num_particles=10, progress=progress)
    out: dict[str, Any] = {"seconds": time.perf_counter() - t0, "quantity": QUANTITY}
    est = {"log_likelihood": score.log_likelihood, "elbo_a": score.neg_elbo, "elbo_b": elbo_b}
    for key, e in est.items():
        sign = -1.0 if key == "elbo_a" else 1.0  # the score holds -ELBO
        out[key] = {"mean": sign * e.mean, "stderr": e.stderr, "n": e.n, "num_samples": e.num_samples}
    out["khat_max"] = score.metrics()["khat_max"]
    latent = bool(getattr(program, "latents", ()))
    out["active_units"] = int(evaluate.active_units(program, x)[0]) if latent else 0
    out["kl_per_dim"] = _kl_per_dim(program, x) if latent else []
    return out


def save_conditional_figures(program: Any, data: Any, history: Sequence[Any] | None, figures_dir: str | os.PathLike
                             ) -> list[Path]:
    """ELBO curves (when there is a history) and, for image data, the completion grid of 8 test rows."""
    folder = Path(figures_dir)
    paths: list[Path] = []
    if history:
        paths.append(plot_elbo_curves(history, folder / FIGURE_NAMES["elbo"],
                                      title=f"ELBO per datapoint, log p(y | c) bound ({getattr(data, 'name', 'data')})"))
    if data.image_shape is not None and len(data.test) > 0:
        x = data.test[:GRID_ROWS]
        with seeded(0), evaluating(program):
            comps = program.complete(x, GRID_SAMPLES, mean=True)
        paths.append(plot_completion_grid(shown_input(program.task, x), comps, x, data.image_shape,
                                          folder / "completions.png", f"Completions ({program.task.label})",
                                          input_shape=input_shape(program.task)))
    return paths


def shown_input(task: Any, x: torch.Tensor) -> torch.Tensor:
    """What the completer sees, drawable: x with missing pixels NaN (inpaint), or the pooled image (superres)."""
    if task.kind == "superres":
        return task.condition(x)
    return torch.where(task.mask, x, torch.full_like(x, float("nan")))


def input_shape(task: Any) -> tuple[int, ...] | None:
    """The shape the input is drawn in: the pooled image's for superres, else None (the image's)."""
    return pooled_shape(task.image_shape, task.factor) if task.kind == "superres" else None


def test_rows(data: Any, rows: int | None) -> torch.Tensor:
    """The first ``rows`` test rows (all for None)."""
    if rows is not None:
        positive_int("rows", rows)
    return data.test[:rows]


__all__ = ["conditional_test_metrics", "save_conditional_figures", "shown_input", "input_shape", "QUANTITY"]
