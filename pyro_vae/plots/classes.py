"""Figures of a classifier and a class-conditional model: reliability diagram, confusion matrix, analogies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pyro_vae.plots.canvas import evaluating, image_grid, new_figure, save_figure, show_grid, value_range
from pyro_vae.rng import seeded

CLASS_FIGURES = {"reliability": "reliability.png", "confusion": "confusion.png", "analogies": "analogies.png",
                 "class_samples": "class_samples.png", "validation": "classifier_validation.png"}
MONITOR_LABELS = {"accuracy": "accuracy", "log_q": "log q(y | x)", "elbo": "ELBO"}  # train.monitor -> words


def plot_reliability(confidence: Sequence[float], accuracy: Sequence[float], count: Sequence[int], ece: float,
                     path: str | os.PathLike, bins: int = 15) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin (bar width = bin), the diagonal, the ECE."""
    fig = new_figure(4.2, 4.2)
    ax = fig.add_subplot()
    width = 1.0 / bins
    ax.bar(confidence, accuracy, width=width * 0.9, color="tab:blue", alpha=0.8, label="accuracy per bin")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for c, a, n in zip(confidence, accuracy, count):
        ax.annotate(str(n), (c, a), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=6)
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence max_y q(y | x)", ylabel="accuracy")
    title = f"Reliability diagram (ECE {ece:.3f})"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path, title)


def plot_confusion(matrix: Sequence[Sequence[int]], path: str | os.PathLike) -> Path:
    """Confusion matrix M[true, predicted] with counts in the cells."""
    m = np.asarray(matrix)
    fig = new_figure(0.45 * len(m) + 1.6, 0.45 * len(m) + 1.2)
    ax = fig.add_subplot()
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > m.max() / 2 else "black")
    ax.set(xlabel="predicted argmax q(y | x)", ylabel="true class", xticks=range(len(m)), yticks=range(len(m)))
    title = f"Confusion matrix ({int(m.sum())} rows, accuracy {np.trace(m) / max(1, m.sum()):.3f})"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, title)


def _grid_figure(images: torch.Tensor, image_shape: Sequence[int], nrow: int, path: str | os.PathLike, title: str) -> Path:
    arr = images.detach().cpu().numpy().astype(np.float64)
    grid = image_grid(arr, image_shape, nrow=nrow)
    longest = max(grid.shape[:2])
    fig = new_figure(6.0 * grid.shape[1] / longest + 0.4, 6.0 * grid.shape[0] / longest + 0.6)
    ax = fig.add_subplot()
    show_grid(ax, grid, *value_range(arr))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, title)


def plot_analogies(program: Any, x: torch.Tensor, image_shape: Sequence[int], path: str | os.PathLike) -> Path:
    """Kingma et al. 2014 Fig. 1: per row, a test image then E[x | y = c, z = E_q[z | x, y*]] for every class c."""
    with evaluating(program):
        styled = program.analogies(x)  # (N, C, D)
    images = torch.cat([x[:, None, :], styled], dim=1).reshape(-1, x.shape[1])
    return _grid_figure(images, image_shape, program.num_classes + 1, path,
                        "Analogies: test image, then its style z under every class y")


def plot_class_samples(program: Any, image_shape: Sequence[int], path: str | os.PathLike, per_class: int = 8,
                       seed: int = 0) -> Path:
    """Class-conditional samples E[x | y, z], z ~ p(z): one column per class, ``per_class`` rows (fixed ``seed``)."""
    C = program.num_classes
    with seeded(seed), evaluating(program):
        y = program.classes().repeat(per_class)
        means = program.sample(C * per_class, mean=True, y=y)
    return _grid_figure(means, image_shape, C, path, "Class-conditional samples E[x | y, z], z ~ p(z) (column = class)")


def plot_error_by_labels(labels: Sequence[int], series: dict[str, tuple[Sequence[float], Sequence[float]]],
                         path: str | os.PathLike, title: str = "Test error against the number of labels", *,
                         references: dict[str, Sequence[float]] | None = None, log_error: bool = False) -> Path:
    """Test error (%) against the number of labels (log axis), one line per method: ``series[name] = (means, sds)``.

    A NaN mean is a label count the method was not run at: the line joins the counts it was run at.
    ``references``: published errors per label count, drawn dashed without error bars (NaN: none).
    ``log_error``: a log error axis, for methods an order of magnitude apart.
    """
    from matplotlib.ticker import FuncFormatter, NullLocator

    fig = new_figure(7.6 if references else 5.6, 3.9)
    ax = fig.add_subplot()
    x = np.asarray(labels, dtype=float)
    for name, (means, sds) in series.items():
        m, s = np.asarray(means, dtype=float), np.asarray(sds, dtype=float)
        run = np.isfinite(m)
        ax.errorbar(x[run], m[run], yerr=np.nan_to_num(s[run]), marker="o", capsize=3, label=name)
    styles = [("--", "x"), (":", "^"), ("-.", "+"), ((0, (5, 1, 1, 1)), "s")]
    for k, (name, values) in enumerate((references or {}).items()):
        v = np.asarray(values, dtype=float)
        known = np.isfinite(v)
        line, marker = styles[k % len(styles)]
        ax.plot(x[known], v[known], linestyle=line, marker=marker, color="0.35", markerfacecolor="none", label=name)
    ax.set(xscale="log", yscale="log" if log_error else "linear", xlabel="labelled training rows",
           ylabel="test error (%)")
    ax.set_xticks(x, [str(int(v)) for v in x])
    ax.xaxis.set_minor_locator(NullLocator())  # the label counts only
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if log_error and str(v)[0] in "2356" else ""))
    ax.set_title(title, fontsize=10)
    if references:  # beside the axes: the lines reach every corner
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, title)


def plot_classifier_validation(epochs: Sequence[float], accuracy: Sequence[float], log_q: Sequence[float],
                               kept: int | None, monitor: str | None, path: str | os.PathLike) -> Path:
    """Validation accuracy of argmax q(y | x) and (1/N) sum log q(y_i | x_i) per epoch, the kept epoch marked.

    ``kept``: the epoch whose parameters the program holds (chosen by the score ``monitor``), or None.
    """
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    ax.plot(epochs, 100 * np.asarray(accuracy, dtype=float), color="tab:blue", label="accuracy (%)")
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    right = ax.twinx()
    right.plot(epochs, log_q, color="tab:orange", label="log q(y | x) (nats per row)")
    right.set_ylabel("validation log q(y | x)")
    if kept is not None:
        ax.axvline(kept, color="tab:green", linestyle=":", linewidth=1.2,
                   label=f"kept: epoch {kept:g} (best {MONITOR_LABELS.get(monitor, monitor)})")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    title = "Classifier q(y | x) on the labelled validation split"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, title)


def save_class_figures(program: Any, x: torch.Tensor, metrics: dict[str, Any], image_shape: Sequence[int] | None,
                       folder: str | os.PathLike, rows: int = 8) -> list[Path]:
    """Reliability diagram and confusion matrix from ``metrics`` (inference.semisup.yardstick); for images also
    analogies of the first ``rows`` rows of x and class-conditional samples."""
    folder = Path(folder)
    rel = metrics["reliability"]
    paths = [plot_reliability(rel["confidence"], rel["accuracy"], rel["count"], metrics["ece"],
                              folder / CLASS_FIGURES["reliability"]),
             plot_confusion(metrics["confusion"], folder / CLASS_FIGURES["confusion"])]
    if image_shape is not None:
        paths.append(plot_analogies(program, x[:rows], image_shape, folder / CLASS_FIGURES["analogies"]))
        paths.append(plot_class_samples(program, image_shape, folder / CLASS_FIGURES["class_samples"]))
    return paths


__all__ = ["CLASS_FIGURES", "MONITOR_LABELS", "plot_classifier_validation", "plot_error_by_labels",
           "plot_reliability", "plot_confusion", "plot_analogies", "plot_class_samples", "save_class_figures"]
