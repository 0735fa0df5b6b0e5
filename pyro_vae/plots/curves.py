"""ELBO curves per epoch: train and validation, best epoch marked, KL warm-up shaded."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from pyro_vae.plots.canvas import new_figure, save_figure

def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def _finite(v: Any) -> float:
    return float(v) if v is not None and math.isfinite(float(v)) else float("nan")


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [start, stop] (inclusive) of the runs of True in ``mask``."""
    spans, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if not m and start is not None:
            spans.append((start, i - 1))
            start = None
    if start is not None:
        spans.append((start, len(mask) - 1))
    return spans


# ----------------------------------------------------------------------------- ELBO curves
class ElboSeries(NamedTuple):
    """Per-epoch ELBO history as arrays (NaN where a value is missing), read off the records.

    ``best`` is the index of the highest validation ELBO (None without validation);
    ``warmup`` lists index ranges [start, stop] (inclusive) of consecutive epochs with beta < 1.
    """

    epochs: np.ndarray
    train: np.ndarray
    val: np.ndarray
    beta: np.ndarray
    best: int | None
    warmup: list[tuple[int, int]]


def elbo_series(history: Sequence[Any]) -> ElboSeries:
    """Arrays of epoch, train ELBO, validation ELBO and beta from records or dicts.

    Each record needs ``train_elbo``; ``epoch`` defaults to its position, ``val_elbo`` to
    missing and ``beta`` to 1. best = argmax_e val_elbo[e] over the epochs that have one.
    """
    records = list(history)
    if not records:
        raise ValueError("plot_elbo_curves: history is empty; train for at least one epoch first")
    epochs = np.array([float(_field(r, "epoch", i)) for i, r in enumerate(records)])
    train = np.array([_finite(_field(r, "train_elbo")) for r in records])
    val = np.array([_finite(_field(r, "val_elbo")) for r in records])
    beta = np.array([_finite(_field(r, "beta", 1.0)) for r in records])
    best = int(np.nanargmax(val)) if np.isfinite(val).any() else None
    return ElboSeries(epochs, train, val, beta, best, _spans(np.nan_to_num(beta, nan=1.0) < 1.0))


def plot_elbo_curves(history: Sequence[Any], path: str | os.PathLike, *, title: str | None = None,
                     kept_epoch: float | None = None) -> Path:
    """Train and validation ELBO per epoch, L = E_q[log p(x|z)] - KL(q(z|x) || p(z)), nats per datapoint.

    ``history`` holds one record per epoch with ``epoch``, ``train_elbo``, ``val_elbo`` (or
    None) and ``beta`` (an ``inference.training.EpochRecord`` or a dict with those keys). The
    epoch with the highest validation ELBO is marked (``kept_epoch``: that epoch instead, for a fit
    that kept its parameters by another validation score); KL warm-up is shaded (records with
    beta < 1, plus the epoch in which beta reached 1, since ``beta`` is its value at the last
    step of an epoch); there the train curve is the annealed bound that was optimized. When the first epochs lie far below the rest, the y axis is cut so the later
    curve stays readable and a note says so.
    """
    series = elbo_series(history)
    epochs, train, val = series.epochs, series.train, series.val
    n_epochs = len(epochs)
    recon, kl = elbo_terms(history)
    split = bool(np.isfinite(recon).any())
    fig = new_figure(6.4, 6.6 if split else 4.0)
    ax, ax_terms = fig.subplots(2, 1, sharex=True) if split else (fig.add_subplot(), None)
    for k, (a, b) in enumerate(series.warmup):
        # beta is recorded at an epoch's last step, so the epoch whose record first shows
        # beta = 1 annealed its earlier steps too: the shade runs to the end of that epoch.
        end = epochs[b + 1] if b + 1 < n_epochs else epochs[b]
        ax.axvspan(epochs[a] - 0.5, end + 0.5, color="0.85", zorder=0,
                   label="KL warm-up (beta < 1; train = annealed bound)" if k == 0 else None)
    marker = "o" if n_epochs <= 30 else None
    ax.plot(epochs, train, color="tab:blue", marker=marker, markersize=3, label="train ELBO")
    if series.best is not None:
        ok = np.isfinite(val)  # validation may run every k epochs: join the epochs that have it
        ax.plot(epochs[ok], val[ok], color="tab:orange", marker="o" if ok.sum() <= 30 else None, markersize=3,
                label="validation ELBO")
        at = np.flatnonzero(epochs == kept_epoch) if kept_epoch is not None else []
        best = int(at[0]) if len(at) else series.best
        what = "kept epoch, validation" if len(at) else "best validation"
        ax.axvline(epochs[best], color="tab:green", linestyle=":", linewidth=1)
        ax.plot([epochs[best]], [val[best]], marker="*", markersize=12, color="tab:green", linestyle="none",
                label=f"{what}: {val[best]:.2f} at epoch {epochs[best]:g}")

    values = np.concatenate([train, val])
    values = values[np.isfinite(values)]
    skip = max(1, n_epochs // 10)
    tail = np.concatenate([train[skip:], val[skip:]])
    tail = tail[np.isfinite(tail)]
    if n_epochs >= 5 and tail.size and values.size:
        spread = max(float(tail.max() - tail.min()), 1e-6)
        if float(values.min()) < float(tail.min()) - 2.0 * spread:
            ax.set_ylim(float(tail.min()) - 0.15 * spread, float(values.max()) + 0.1 * spread)
            ax.text(0.01, 0.98, f"early epochs off-scale (lowest {values.min():.1f})", transform=ax.transAxes,
                    fontsize=8, color="0.3", va="top")

    title = title or "ELBO per datapoint"
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per datapoint)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if ax_terms is not None:
        _plot_terms(ax_terms, epochs, recon, kl)
    fig.tight_layout()
    return save_figure(fig, path, title)


def elbo_terms(history: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch validation reconstruction term E_q[log p(x|z)] and KL(q(z|x) || p(z)) from the records' ``stats``.

    NaN where a record has none (``val_reconstruction`` and ``val_kl``, nats per datapoint).
    """
    stats = [_field(r, "stats", None) or {} for r in history]
    recon = np.array([_finite(st.get("val_reconstruction")) for st in stats])
    kl = np.array([_finite(st.get("val_kl")) for st in stats])
    return recon, kl


def _plot_terms(ax: Any, epochs: np.ndarray, recon: np.ndarray, kl: np.ndarray) -> None:
    """The ELBO's two terms on validation data: reconstruction (left axis) and KL (right axis)."""
    ok = np.isfinite(recon)
    ax.plot(epochs[ok], recon[ok], color="tab:purple", label="reconstruction E_q[log p(x|z)]")
    ax.set_ylabel("reconstruction (nats)", color="tab:purple")
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)
    twin = ax.twinx()
    twin.plot(epochs[ok], kl[ok], color="tab:red", linestyle="--", label="KL(q(z|x) || p(z))")
    twin.set_ylabel("KL (nats)", color="tab:red")
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center right")
    ax.set_title("validation ELBO = reconstruction - KL", fontsize=9)


# ----------------------------------------------------------------------------- reconstructions


__all__ = ['ElboSeries', 'elbo_series', 'elbo_terms', 'plot_elbo_curves']
