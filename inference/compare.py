r"""Run several inference methods on one spec and one data set; write a table and the AEVB Figure 3 plot.

For every training size N_train (the first N_train rows of a seed-fixed permutation of
``data.train``, so smaller subsets are nested in larger ones) and every method, a fresh model
is trained with :func:`inference.methods.fit` under the same :class:`~inference.methods.Budget`, then
scored by the one yardstick (:func:`inference.methods.score`, i.e.
:func:`inference.evaluate.log_likelihood` with the method's proposal)::

    log p(x_i) ~= logsumexp_k [log p_theta(x_i, z_ik) - log q(z_ik | x_i)] - log K

on held-out rows (``data.test``) and on training rows (a fixed Bernoulli draw of them when the
data are dynamically binarized), with the standard error over datapoints. The test ELBO
(estimator A, of the method's variational q) is reported where the method has one.

Outputs in ``out``:

* ``results.csv`` / ``results.md``: one row per method x training size: held-out and training
  log p(x) (mean, std. error, rows, K), test ELBO, training wall time, samples evaluated, epochs;
* ``figure3.png``: held-out log p(x) against training samples evaluated (log axis), one line
  per method per training size, through the states reached at fractions of the budget
  (``checkpoints``) -- the shape of Kingma & Welling (2014), Figure 3. The curve uses
  ``curve_samples`` importance samples on ``curve_rows`` test rows for every point (by default
  the table's K and rows: then its last point is the table's number).
"""

from __future__ import annotations

import csv
import io
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from inference import methods as method_api
from inference.evaluate import Estimate
from inference.methods import Budget, MethodResult
from inference.progress import bar
from inference.training.settings import check_batch_size
from pyro_vae.files import write_text
from pyro_vae.checks import positive_int
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, DataError, UnsupportedModelError
from pyro_vae.spec import RunSpec, load_spec, spec_to_dict

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
DEFAULT_METHODS = ("svi-trace", "svi-meanfield", "iwae", "rws", "map", "local-vi", "mcem")
DEFAULT_CHECKPOINTS = (0.125, 0.25, 0.5, 1.0)
FILES = ("results.csv", "results.md", "figure3.png")


# -- results --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    """The plain numbers of an :class:`~inference.evaluate.Estimate`: mean +- stderr over n rows, K samples,
    and the per-row values (for paired comparisons of methods scored on the same rows)."""

    mean: float
    stderr: float
    n: int
    num_samples: int
    values: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, est: Estimate | None) -> "Score | None":
        if est is None:
            return None
        return cls(float(est.mean), float(est.stderr), int(est.n), int(est.num_samples),
                   tuple(float(v) for v in est.values))


def paired_difference(a: Score, b: Score) -> tuple[float, float]:
    """(mean_i (a_i - b_i), its standard error sd(a - b) / sqrt(n)) for two scores of the same rows."""
    if a.n != b.n or len(a.values) != a.n or len(b.values) != b.n:
        raise ConfigError("a paired difference needs two scores of the same rows (with their per-row values)")
    diff = torch.tensor(a.values, dtype=torch.float64) - torch.tensor(b.values, dtype=torch.float64)
    se = float(diff.std() / math.sqrt(a.n)) if a.n > 1 else float("nan")
    return float(diff.mean()), se


@dataclass(frozen=True)
class Row:
    """One method trained on one training size, scored by the yardstick (``notes`` says why a row is empty)."""

    method: str
    train_size: int
    heldout: Score | None
    train: Score | None
    test_elbo: Score | None
    wall_time: float
    samples_evaluated: int
    epochs: int
    notes: str = ""


@dataclass(frozen=True)
class CurvePoint:
    """Held-out log p(x) of the state a method reached at ``fraction`` of its budget."""

    method: str
    train_size: int
    fraction: float
    epochs: int
    samples_evaluated: int
    wall_time: float
    heldout: Score


@dataclass(frozen=True)
class Comparison:
    """What :func:`run_compare` measured, and the files it wrote (empty without ``out``)."""

    rows: tuple[Row, ...]
    curve: tuple[CurvePoint, ...]
    budget: Budget
    dataset: str
    files: tuple[Path, ...] = ()
    device: str = "cpu"

    def row(self, method: str, train_size: int) -> Row:
        """The row of ``method`` at ``train_size`` (KeyError if absent)."""
        for r in self.rows:
            if r.method == method and r.train_size == train_size:
                return r
        raise KeyError((method, train_size))

    def table(self) -> str:
        """The results as a markdown table."""
        return markdown_table(self.rows)


# -- argument parsing (shared by the CLI and scripts) ------------------------------------------------------
def parse_methods(text: str | Sequence[str]) -> list[str]:
    """"a,b,c" or a list -> validated method names (ConfigError listing the valid ones)."""
    names = text.split(",") if isinstance(text, str) else list(text)
    return method_api.check_methods(names)


def parse_sizes(text: str | Sequence[int]) -> list[int]:
    """"1000,50000" or a list -> positive integers (ConfigError otherwise); "1e3" is accepted."""
    items = text.split(",") if isinstance(text, str) else list(text)
    sizes = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"training size {item!r} is not a number; write e.g. --train-sizes 1000,50000") from None
        if not value >= 1 or value != int(value):
            raise ConfigError(f"training size {item!r} must be a positive whole number of rows")
        sizes.append(int(value))
    if not sizes:
        raise ConfigError("no training size given; write e.g. --train-sizes 1000,50000")
    return sizes


def parse_fractions(text: str | Sequence[float]) -> tuple[float, ...]:
    """"0.25,0.5,1" -> fractions of the budget in (0, 1]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"checkpoints {text!r} must be fractions of the budget, e.g. 0.25,0.5,1") from None
    if not out or not all(0 < f <= 1 for f in out):
        raise ConfigError(f"checkpoints {text!r} must be fractions of the budget in (0, 1], e.g. 0.25,0.5,1")
    return out


# -- data -------------------------------------------------------------------------------------------------
def subset(data: DataSplits, n: int, seed: int = 0) -> DataSplits:
    """``data`` with its training split cut to n rows: the first n of a permutation fixed by ``seed``.

    The permutation is the same for every n, so smaller subsets are nested in larger ones.
    """
    total = int(data.train.shape[0])
    if n > total:
        raise DataError(f"training size {n} is larger than the {total} training rows of {data.name!r}; choose sizes <= {total}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    labels = data.train_labels.index_select(0, order) if data.train_labels is not None else None
    return dataclasses.replace(data, train=data.train.index_select(0, order), train_labels=labels)


def scoring_rows(x: Tensor, data: DataSplits, n: int, seed: int) -> Tensor:
    """The first n rows of x; for dynamically binarized data one fixed Bernoulli draw of them (seeded)."""
    rows = x[:n]
    if data.binarize == "dynamic":
        rows = torch.bernoulli(rows, generator=torch.Generator().manual_seed(seed))
    return rows


# -- the comparison ------------------------------------------------------------------------------------------
def run_compare(
    spec: RunSpec | Mapping[str, Any] | str | None,
    data: DataSplits,
    *,
    methods: Sequence[str] | str = DEFAULT_METHODS,
    train_sizes: Sequence[int] | str,
    budget: Budget | str,
    num_samples: int = 1000,
    eval_rows: int = 1000,
    train_rows: int | None = None,
    checkpoints: Sequence[float] = DEFAULT_CHECKPOINTS,
    curve_samples: int | None = None,
    curve_rows: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> Comparison:
    """Train each method on each training size within ``budget`` and score all of them the same way.

    ``num_samples`` = K and ``eval_rows`` rows for the table (held-out: ``data.test``; training:
    ``train_rows`` of the subset's rows, default ``eval_rows``); ``checkpoints``: fractions of
    the budget drawn in the figure, scored with ``curve_samples`` (default K) on ``curve_rows``
    test rows (default ``eval_rows``);
    ``options``: per-method keyword options for :func:`inference.methods.fit`. A method that
    cannot handle the model (UnsupportedModelError) gets an empty row saying why. ``device``: where
    every method trains and is scored (overrides ``spec.train.device``; mcem and mcmc run on the CPU only and
    get such a row on another device). With ``out``,
    writes ``results.csv``, ``results.md`` and ``figure3.png`` there.
    """
    spec = load_spec(spec)
    spec = method_api.placed(spec, device)  # every method fit below trains on this resolved device
    methods = parse_methods(methods)
    sizes = parse_sizes(train_sizes)
    budget = Budget.parse(budget)
    fractions = parse_fractions(checkpoints)
    for name, v in (("num_samples", num_samples), ("eval_rows", eval_rows), ("train_rows", train_rows),
                    ("curve_samples", curve_samples),
                    ("curve_rows", curve_rows)):
        if v is not None:
            positive_int(name, v)
    options = dict(options or {})
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise ConfigError(f"options given for method(s) {unknown} that are not compared ({', '.join(methods)})")
    for n in sizes:  # fail on an impossible size, or a batch larger than it, before training anything
        check_batch_size(spec.train, subset(data, n))
    seed = spec.train.seed
    curve_samples = curve_samples or num_samples
    curve_rows = curve_rows or eval_rows
    x_test = scoring_rows(data.test, data, eval_rows, seed)
    x_curve = x_test if curve_rows == eval_rows else scoring_rows(data.test, data, curve_rows, seed)
    if x_test.shape[0] == 0:
        raise DataError(f"{data.name!r} has no test rows to score held-out log p(x) on; set data.test_fraction > 0")

    _warm_up()
    rows: list[Row] = []
    curve: list[CurvePoint] = []
    plan = [(n, m) for n in sizes for m in methods]
    for n, method in bar(plan, enabled=progress, desc="compare"):
        sub = subset(data, n, seed)
        x_train = scoring_rows(sub.train, sub, train_rows or eval_rows, seed + 1)
        logger.info("compare: %s on %d training rows, budget %s", method, n, budget)
        try:
            result = method_api.fit(spec, sub, method=method, budget=budget, checkpoints=fractions,
                                    options=options.get(method), progress=progress)
            row, points = _score(result, n, x_test, x_train, x_curve, num_samples, curve_samples, seed)
        except UnsupportedModelError as err:
            logger.warning("compare: %s skipped on %d rows: %s", method, n, err)
            rows.append(Row(method, n, None, None, None, math.nan, 0, 0, f"unsupported: {err}"))
            continue
        rows.append(row)
        curve.extend(points)
        logger.info("compare: %s N=%d: held-out log p(x) %.3f +- %.3f", method, n, row.heldout.mean, row.heldout.stderr)
    comparison = Comparison(tuple(rows), tuple(curve), budget, data.name, device=spec.train.device)
    if out is not None:
        comparison = dataclasses.replace(comparison, files=write_results(comparison, out, spec=spec))
    return comparison


def _warm_up() -> None:
    """Pay one-time costs before any method's clock starts: the first torch optimizer imports
    torch._dynamo (about 2 s), which would otherwise be charged to the first method trained."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _score(
    result: MethodResult,
    n: int,
    x_test: Tensor,
    x_train: Tensor,
    x_curve: Tensor,
    num_samples: int,
    curve_samples: int,
    seed: int,
) -> tuple[Row, list[CurvePoint]]:
    """Table row (held-out, training, test ELBO) and curve points of one trained method."""
    q_test = method_api.proposal_for(result, x_test)
    heldout = method_api.score(result, x_test, num_samples, proposal=q_test, seed=seed)
    train = method_api.score(result, x_train, num_samples, seed=seed)
    elbo = method_api.test_elbo(result, x_test, proposal=q_test, seed=seed)
    row = Row(result.method, n, Score.of(heldout), Score.of(train), Score.of(elbo), result.wall_time,
              result.samples_evaluated, result.epochs, result.notes)
    points = []
    same = x_curve is x_test and curve_samples == num_samples
    for cp in result.checkpoints:
        if same and cp.fraction == 1.0:
            est = heldout
        else:
            est = method_api.score(cp, x_curve, curve_samples, seed=seed)
        points.append(CurvePoint(result.method, n, cp.fraction, cp.epochs, cp.samples_evaluated, cp.wall_time,
                                 Score.of(est)))
    return row, points


# -- output -------------------------------------------------------------------------------------------------
CSV_FIELDS = (
    "method", "train_size", "heldout_logpx", "heldout_stderr", "heldout_rows", "train_logpx", "train_stderr",
    "train_rows", "K", "test_elbo", "test_elbo_stderr", "wall_time_s", "samples_evaluated", "epochs", "notes",
)


def _csv_row(r: Row) -> dict[str, Any]:
    def num(score: Score | None, attr: str) -> Any:
        return "" if score is None else getattr(score, attr)

    return {
        "method": r.method, "train_size": r.train_size,
        "heldout_logpx": num(r.heldout, "mean"), "heldout_stderr": num(r.heldout, "stderr"), "heldout_rows": num(r.heldout, "n"),
        "train_logpx": num(r.train, "mean"), "train_stderr": num(r.train, "stderr"), "train_rows": num(r.train, "n"),
        "K": num(r.heldout, "num_samples"), "test_elbo": num(r.test_elbo, "mean"),
        "test_elbo_stderr": num(r.test_elbo, "stderr"), "wall_time_s": "" if math.isnan(r.wall_time) else r.wall_time,
        "samples_evaluated": r.samples_evaluated, "epochs": r.epochs, "notes": r.notes,
    }


def markdown_table(rows: Sequence[Row]) -> str:
    """Rows as a markdown table (nats per datapoint, +- one standard error)."""
    def fmt(s: Score | None) -> str:
        return "-" if s is None else f"{s.mean:.2f} +- {s.stderr:.2f}"

    lines = [
        "| method | N train | held-out log p(x) | train log p(x) | test ELBO | wall time (s) | samples evaluated | epochs | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        wall = "-" if math.isnan(r.wall_time) else f"{r.wall_time:.1f}"
        lines.append(f"| {r.method} | {r.train_size} | {fmt(r.heldout)} | {fmt(r.train)} | {fmt(r.test_elbo)} | {wall} | "
                     f"{r.samples_evaluated:.3g} | {r.epochs} | {r.notes} |")
    return "\n".join(lines)


def write_results(comparison: Comparison, out: str | Path, *, spec: RunSpec | None = None) -> tuple[Path, ...]:
    """Write results.csv, results.md and figure3.png into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in comparison.rows:
        writer.writerow(_csv_row(r))
    write_text(csv_path, table.getvalue())
    fig_path = plot_figure3(comparison.curve, out / "figure3.png", title=f"{comparison.dataset}: held-out log p(x)")
    k = next((r.heldout.num_samples for r in comparison.rows if r.heldout is not None), None)
    n_rows = next((r.heldout.n for r in comparison.rows if r.heldout is not None), None)
    t_rows = next((r.train.n for r in comparison.rows if r.train is not None), None)
    lines = [
        f"# Inference methods compared on {comparison.dataset}",
        "",
        f"Budget per method and training size: {comparison.budget}. Every method is scored by the same "
        f"estimator, `inference.evaluate.log_likelihood` (importance sampling, K = {k}, on {n_rows} held-out rows "
        f"and {t_rows} training rows), with the method's own proposal: the encoder for amortized methods, local "
        "VI q_i for map / local-vi / mcem, a Gaussian fitted to NUTS draws for mcmc. Numbers are nats per "
        "datapoint, +- one standard error over datapoints; the test ELBO (estimator A) is shown where the "
        f"proposal is a variational posterior. Wall time is training only; device: {comparison.device}.",
        "",
        comparison.table(),
        "",
        "![held-out log p(x) against training samples evaluated](figure3.png)",
        "",
    ]
    if comparison.curve:
        lines += ["## Held-out log p(x) along training", "",
                  "| method | N train | budget fraction | epochs | samples evaluated | wall time (s) | held-out log p(x) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for p in comparison.curve:
            lines.append(f"| {p.method} | {p.train_size} | {p.fraction:g} | {p.epochs} | {p.samples_evaluated:.3g} | "
                         f"{p.wall_time:.1f} | {p.heldout.mean:.2f} +- {p.heldout.stderr:.2f} (K={p.heldout.num_samples}, n={p.heldout.n}) |")
        lines.append("")
    if spec is not None:
        lines += ["## Spec", "", "```", _yaml(spec_to_dict(spec)), "```", ""]
    md_path = write_text(out / "results.md", "\n".join(lines))
    return csv_path, md_path, fig_path


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).rstrip()


_LINESTYLES = ("-", "--", ":", "-.")


def plot_figure3(points: Sequence[CurvePoint], path: str | Path, *, title: str = "held-out log p(x)") -> Path:
    """Held-out log p(x) (+- 1 s.e.) against training samples evaluated (log x axis):
    one colour per method, one line style per training size (AEVB Figure 3's layout)."""
    fig = Figure(figsize=(7.5, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    methods = list(dict.fromkeys(p.method for p in points))
    sizes = sorted({p.train_size for p in points})
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    styles = {n: _LINESTYLES[i % len(_LINESTYLES)] for i, n in enumerate(sorted(sizes, reverse=True))}
    for m in methods:
        for n in sizes:
            line = sorted((p for p in points if p.method == m and p.train_size == n), key=lambda p: p.samples_evaluated)
            if not line:
                continue
            xs = [max(1, p.samples_evaluated) for p in line]
            ys = [p.heldout.mean for p in line]
            es = [p.heldout.stderr for p in line]
            ax.errorbar(xs, ys, yerr=es, color=colors[m], linestyle=styles[n], marker="o", markersize=3, capsize=2,
                        label=f"{m}, N={n}")
    ax.set_xscale("log")
    ax.set_xlabel("training samples evaluated")
    ax.set_ylabel("held-out log p(x) (nats per datapoint)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Title": title, "Software": "pyro-vae"})
    fig.clear()
    return path


__all__ = [
    "Score", "Row", "CurvePoint", "Comparison", "run_compare", "paired_difference", "subset", "scoring_rows", "parse_methods",
    "parse_sizes", "parse_fractions", "markdown_table", "write_results", "plot_figure3", "DEFAULT_METHODS",
]
