"""What an M2 run folder adds: the semi-supervised metrics (:mod:`inference.semisup.yardstick`), their figures,
their lines of report.md, and ``pyro-vae classify`` (predictions and class probabilities, written atomically)."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inference.semisup.yardstick import class_probabilities, semi_supervised_metrics
from inference.training import FitResult
from pyro_vae.checks import choice
from pyro_vae.data import DataSplits
from pyro_vae.data_file import read_rows
from pyro_vae.errors import DataError
from pyro_vae.files import write_text
from pyro_vae.plots import save_run_figures
from pyro_vae.plots.classes import CLASS_FIGURES, plot_classifier_validation, save_class_figures

SPLITS = ("test", "val", "train")


def record(program: nn.Module, data: DataSplits, figures_dir: Path | None, *, num_samples: int,
           rows: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Semi-supervised metrics of the first ``rows`` test rows (all for None), with their figures in ``figures_dir``."""
    if data.test_labels is None:
        raise DataError(f"{data.name} has no test labels; accuracy and calibration need them")
    t0 = time.perf_counter()
    x, y = data.test[:rows], data.test_labels[:rows]
    metrics = semi_supervised_metrics(program, x, y, num_samples=num_samples, progress=progress)
    metrics["seconds"] = time.perf_counter() - t0
    if figures_dir is not None:
        save_class_figures(program, x, metrics, data.image_shape, figures_dir)
    return metrics


def save_training_figures(program: nn.Module, data: DataSplits, fit: FitResult, figures_dir: Path) -> list[Path]:
    """The run figures of :func:`pyro_vae.plots.save_run_figures`, their ELBO curve showing the enumerated
    validation ELBO (the loop's own validation score is the classifier's), and the classifier's
    validation accuracy and log q(y | x) per epoch with the kept epoch marked."""
    history = fit.history
    curves = [dataclasses.replace(r, val_elbo=r.stats.get("val_elbo")) for r in history]
    paths = save_run_figures(program, data, curves, figures_dir, kept_epoch=fit.best_epoch if fit.monitor else None)
    if history:
        nan = math.nan
        paths.append(plot_classifier_validation(
            [r.epoch for r in history], [r.stats.get("val_accuracy", nan) for r in history],
            [r.stats.get("val_log_q", nan) for r in history], fit.best_epoch if fit.monitor else None, fit.monitor,
            Path(figures_dir) / CLASS_FIGURES["validation"]))
    return paths


def report_lines(metrics: dict[str, Any]) -> list[str]:
    """The semi-supervised rows of report.md."""
    ll, k = metrics["log_likelihood_summed"], metrics["khat"]
    return [
        "## Semi-supervised (M2)", "",
        "| metric (test) | value |", "|---|---|",
        f"| accuracy of argmax q(y \\| x) ({metrics['n']} rows) | {metrics['accuracy']:.4f} +- {metrics['accuracy_stderr']:.4f} |",
        f"| error | {100 * metrics['error']:.2f} % |",
        f"| expected calibration error | {metrics['ece']:.4f} |",
        f"| log p(x), y summed out, IS K = {ll['num_samples']} per class | {ll['mean']:.3f} +- {ll['stderr']:.3f} |",
        f"| PSIS k-hat: max, fraction <= 0.5, fraction > 0.7 | {k['max']:.2f}, {k['fraction_good']:.2f}, {k['fraction_bad']:.2f} |",
        "",
    ]


def rows_to_classify(data: DataSplits, dataset: str) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(rows, labels or None, a name for the file) of a split of the run (test | val | train) or of a data file."""
    if dataset in SPLITS:
        x = getattr(data, dataset)
        if x.shape[0] == 0:
            raise DataError(f"the {dataset} split of {data.name} is empty; classify another split (--dataset test|val|train)")
        return x, getattr(data, f"{dataset}_labels"), dataset
    if not Path(dataset).suffix:
        choice("dataset", dataset, SPLITS)  # neither a split nor a file: name the valid splits
    x, labels = read_rows(dataset)
    return x, labels, Path(dataset).stem


def write_predictions(program: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, out: Path) -> Path:
    """``out`` (a .csv): row, prediction, the true label where known, q(y = c | x) per class; written atomically."""
    program.check_data(x, "rows to classify")
    was = program.training
    program.eval()
    try:
        probs = class_probabilities(program, x)
    finally:
        program.train(was)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["row", "prediction", "label"] + [f"p{c}" for c in range(probs.shape[1])])
    pred = probs.argmax(-1)
    for i in range(x.shape[0]):
        label = "" if labels is None or int(labels[i]) < 0 else int(labels[i])
        writer.writerow([i, int(pred[i]), label] + [f"{float(p):.6g}" for p in probs[i]])
    return write_text(out, text.getvalue())


def accuracy_of(path: Path) -> float | None:
    """Accuracy of a predictions file over its labelled rows (None without labels)."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] != ""]
    return sum(r["prediction"] == r["label"] for r in rows) / len(rows) if rows else None


__all__ = ["record", "save_training_figures", "report_lines", "rows_to_classify", "write_predictions", "accuracy_of", "SPLITS"]
