"""Run folders: train a spec end to end, and reload a finished run to evaluate or sample.

A run folder holds::

    config.yaml          the resolved RunSpec (reloadable with pyro_vae.load_spec)
    metrics.json         history, wall time, test log p(x) (IS, K samples) with std. error,
                         test ELBO under estimators A and B, active units, KL per latent dim
    checkpoints/         last.pt (every epoch, atomic) and best.pt (best validation score: the ELBO, M2's accuracy)
    figures/*.png        ELBO curves, reconstructions, prior samples, latent space (+ manifold)
    report.md            a short human-readable summary
    (M2 runs)            metrics.json test.semi_supervised: accuracy, ECE, confusion, log p(x) with y
                         summed out; figures reliability/confusion/analogies/class_samples/
                         classifier_validation (the ELBO curve shows the enumerated validation ELBO);
                         predictions/*.csv from classify_run

The CLI only parses arguments and calls these functions; notebooks call them too.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pyro
from pyro import poutine
import torch

from inference.devices import device_record, module_placement, resolve_device
from inference.semisup import results as semisup_results
from inference.semisup.m1 import latent_features
from inference.objectives import kl_mode
from inference.run_folder import check_fresh, check_resume_spec, clear_run, locked
from inference.run_kinds import kind_of
from inference.training import FitResult, check_best_monitor, check_resumable, check_train_spec, data_info, load_checkpoint, vae_state
from inference.training import distributed
from inference.training.tracking import TensorBoardTracker, require_tensorboard
from inference.baselines import check_continuous_latents, refined_log_likelihood
from pyro_vae.checks import integer, positive_int
from pyro_vae.data import DataSplits, load_dataset
from pyro_vae.labels import semi_supervised
from pyro_vae.errors import ConfigError, DataError, TrainingError, UnsupportedModelError
from pyro_vae.spec import RunSpec, load_spec, override, save_spec, spec_to_dict
from pyro_vae.export import export_program
from pyro_vae.files import atomic_write, write_json, write_text
from pyro_vae.plots import plot_sample_grid
from pyro_vae.plots.classes import MONITOR_LABELS
from pyro_vae.rng import seeded
from pyro_vae.build import build_program
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a training run produced: where it lives, the fit, and the test metrics."""

    run_dir: Path
    fit: FitResult
    metrics: dict[str, Any]


def load_data(spec: RunSpec) -> DataSplits:
    """The dataset a spec names, split deterministically by the run's seed; labels hidden for semi-supervised
    runs (``data.labels``), rows replaced by an M1 run's posterior means for M1+M2 (``data.m1``)."""
    d = spec.data
    data = load_dataset(
        d.dataset, data_dir=d.data_dir, binarize=d.binarize, val_fraction=d.val_fraction,
        test_fraction=d.test_fraction, seed=spec.train.seed, max_train=d.max_train,
    )
    if d.labels is not None:  # semi-supervised: the labels of d.labels balanced training rows kept, the others hidden
        data = semi_supervised(data, d.labels, num_classes=spec.model.program.options.get("classes"), seed=spec.train.seed)
    if d.m1 is not None:  # M1+M2: every row replaced by its posterior mean under the M1 run's guide
        data = latent_features(d.m1, data, units=d.m1_units, features=d.m1_features)
    return data


def new_program(spec: RunSpec, data: DataSplits) -> VAE:
    """A fresh program of the kind ``spec.model.program`` names, for ``data`` (clean param store, weights fixed by the run's seed)."""
    pyro.clear_param_store()
    return build_program(
        spec.model, data_dim=data.feature_dim, image_shape=data.image_shape,
        data_sample=data.train[:1000], seed=spec.train.seed,
    )


def test_metrics(vae: VAE, data: DataSplits, *, num_samples: int, rows: int | None = None,
                 progress: bool = True, figures_dir: Path | None = None) -> dict[str, Any]:
    """Held-out metrics of a trained program on the first ``rows`` of ``data.test`` (all for None), as its kind
    measures them (:mod:`inference.run_kinds`): the one yardstick, IS log p(x), for a generative program;
    log p(y | c) for a conditional one; plus accuracy and calibration for a semi-supervised one (their figures
    in ``figures_dir`` when given). ``seconds`` is the evaluation's wall time.
    """
    if rows is not None:
        positive_int("eval_rows", rows)
    return kind_of(vae).test_metrics(vae, data, figures_dir, num_samples=num_samples, rows=rows, progress=progress)


def train(
    spec: RunSpec | str | Path | dict | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    allow_data_change: bool = False,
    eval_samples: int = 1000,
    eval_rows: int | None = None,
    tensorboard: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> RunResult:
    """Train ``spec`` into ``run_dir``: data -> program -> SVI -> test metrics -> figures -> report.

    ``device``: where to train and evaluate (overrides ``spec.train.device``; metrics.json records
    the device used). Under torchrun (:mod:`inference.training.distributed`) every process trains
    and process 0 alone checks and writes the folder; the other processes return no metrics.

    Nothing is written before every check passes: the names in the spec, a fresh folder (or
    ``overwrite``), or for ``resume`` the saved spec (only train.epochs, patience and
    validate_every_step may change) and the checkpoint's data (``allow_data_change`` accepts
    other values of the same shape). The folder is locked for the run's life
    (:mod:`inference.run_folder`). ``tensorboard``: also log every epoch to ``run_dir/tensorboard``.
    """
    run_dir = Path(run_dir)
    if resume and spec is None:
        spec = run_dir / "config.yaml"
    spec = load_spec(spec)
    if device is not None:
        spec = override(spec, train__device=device)
    check_train_spec(spec.train)
    positive_int("eval_samples", eval_samples)
    if eval_rows is not None:
        positive_int("eval_rows", eval_rows)
    used = resolve_device(spec.train.device, name="train.device")
    distributed.init_from_env(used)
    main = distributed.is_main()
    if resume:
        check_resume_spec(run_dir, spec)
    elif main:
        check_fresh(run_dir, overwrite=overwrite)
    data = load_data(spec)
    if resume:
        path = run_dir / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(path)
        check_resumable(ckpt, spec.train, data_info(data), path, allow_data_change=allow_data_change)
    if tensorboard:
        require_tensorboard()
    vae = new_program(spec, data)
    _check_run_data(vae, data, spec)
    if resume and ckpt["best"].get("epoch") is not None:
        check_best_monitor(ckpt["best"].get("monitor"), kind_of(vae).monitor(spec), str(path))
    if not main:  # another process of a torchrun job: train, write nothing
        fit = kind_of(vae).fit(vae, data, spec.train, run_dir=run_dir, resume=resume,
                               allow_data_change=allow_data_change, progress=False)
        return RunResult(run_dir, fit, {})
    with locked(run_dir), contextlib.ExitStack() as stack:
        if not resume:  # again under the lock: another run may have finished in the folder meanwhile
            check_fresh(run_dir, overwrite=overwrite)
        if overwrite and not resume:
            clear_run(run_dir)
        save_spec(spec, run_dir / "config.yaml")
        callbacks = []
        if tensorboard:
            tracker = TensorBoardTracker(run_dir / "tensorboard", image_shape=data.image_shape)
            stack.callback(tracker.close)
            callbacks.append(tracker)
        logger.info("training %s on %s (%d train rows)", type(vae).__name__, data.name, len(data.train))
        fit = kind_of(vae).fit(vae, data, spec.train, run_dir=run_dir, resume=resume,
                               allow_data_change=allow_data_change, callbacks=callbacks, progress=progress)
        metrics = _finish_run(spec, data, vae, fit, run_dir, eval_samples=eval_samples, eval_rows=eval_rows,
                              progress=progress)
    return RunResult(run_dir, fit, metrics)


def _finish_run(spec: RunSpec, data: DataSplits, vae: VAE, fit: FitResult, run_dir: Path, *, eval_samples: int,
                eval_rows: int | None, progress: bool) -> dict[str, Any]:
    """After the fit: the test metrics, metrics.json, the figures and report.md of the run folder."""
    test = test_metrics(vae, data, num_samples=eval_samples, rows=eval_rows, progress=progress,
                        figures_dir=run_dir / "figures")
    metrics = _run_metrics(spec, data, vae, fit, test)
    metrics["device"] = {**device_record(module_placement(vae)[0]), "processes": distributed.world()[1]}
    write_json(run_dir / "metrics.json", metrics)
    kind_of(vae).figures(vae, data, fit, run_dir / "figures")
    write_report(run_dir, metrics)
    return metrics


def _check_run_data(vae: VAE, data: DataSplits, spec: RunSpec) -> None:
    """What the fit and the evaluation would refuse, refused before the folder is touched: the kind's checks of
    the fit's inputs (:mod:`inference.run_kinds`) and a test split with too few rows to score."""
    kind_of(vae).check_data(vae, data, spec)
    if data.test.shape[0] < 2:
        raise DataError(
            f"the test split has {data.test.shape[0]} row(s); a run scores its held-out log p(x) on at least 2 "
            "(a standard error needs a variance): set data.test_fraction > 0 or load more data"
        )


def _run_metrics(spec: RunSpec, data: DataSplits, vae: VAE, fit: FitResult, test: dict[str, Any]) -> dict[str, Any]:
    """metrics.json of a finished run: data sizes, the fit's history and counters, the test metrics, the spec."""
    return {
        "dataset": data.name,
        "num_train": len(data.train),
        "num_test": len(data.test),
        "kl_mode": kl_mode(vae),
        "wall_time_s": fit.wall_time,
        "samples_evaluated": fit.samples_evaluated,
        "best_epoch": fit.best_epoch,
        "monitor": fit.monitor,
        "stopped": fit.stopped,
        "history": [asdict(r) for r in fit.history],
        "test": test,
        "spec": spec_to_dict(spec),
    }


class LoadedRun(NamedTuple):
    """A run rebuilt from its folder: the spec, the data splits (the recipe's, reloaded) and the program."""

    spec: RunSpec
    data: DataSplits
    program: VAE


def load_run(run_dir: str | Path, *, which: str = "best", device: str | torch.device | None = None) -> LoadedRun:
    """Rebuild a finished run in one call: ``spec, data, program = load_run(RUN_DIR)``.

    ``device``: where the program goes (default the CPU, whatever the run trained on; the
    checkpoint's tensors are read onto the CPU and copied there).

    The program holds the parameters of the best validation epoch (``which="best"``) or of the
    last one (``"last"``), in eval mode; the data are reloaded from the spec's recipe with the
    run's seed, so the splits are the run's own.
    """
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml); train one with `pyro-vae train --out {run_dir}`")
    spec = load_spec(config)
    target = resolve_device(device)
    data = load_data(spec)
    vae = new_program(spec, data)
    vae.load_state_dict(_run_state(run_dir / "checkpoints", which))
    vae.to(target).eval()
    return LoadedRun(spec, data, vae)


def export_run(run_dir: str | Path, path: str | Path, *, which: str = "best") -> Path:
    """Write a run's program, model spec and data recipe to one file (:func:`pyro_vae.export.export_program`).

    Load it without the run folder or the inference package by ``pyro_vae.export.load_program(path)``.
    """
    spec, data, program = load_run(run_dir, which=which)
    recipe = {**spec_to_dict(spec.data), "seed": spec.train.seed, "feature_dim": data.feature_dim,
              "image_shape": list(data.image_shape) if data.image_shape else None}
    return export_program(program, spec.model, recipe, path)


def _run_state(ckpt_dir: Path, which: str) -> dict[str, Any]:
    """The program's ``which`` state from ``last.pt`` (which also carries the best one), else from ``best.pt``.

    best.pt is only the fallback for the best state: a crash between the two writes can leave it
    a step behind, and last.pt is written last. Falling back is logged as a warning.
    """
    last, best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    try:
        return vae_state(load_checkpoint(last), which=which)
    except (TrainingError, ConfigError) as err:
        if which != "best" or not best.is_file():
            raise
        state = load_checkpoint(best)
        logger.warning("%s; using %s instead (the best state, epoch %s)", err, best, state.get("epoch"))
        return vae_state(state, which="best")


def evaluate_run(run_dir: str | Path, *, num_samples: int = 5000, rows: int | None = None, refine_steps: int = 0,
                 progress: bool = True, device: str | torch.device | None = None) -> dict[str, Any]:
    """Re-score the first ``rows`` of a run's test split (all for None) with K = ``num_samples`` on ``device``; update metrics.json.

    The draws are fixed by the run's seed (:func:`pyro_vae.rng.seeded`): the same call gives the same figures.

    ``refine_steps`` > 0 (a VAE with one continuous latent z) adds ``log_likelihood_refined``: log p(x) by
    importance sampling from the encoder's q refined per row for that many steps
    (:func:`inference.baselines.refined_log_likelihood`), beside the estimate with the encoder's own q.
    """
    run_dir = Path(run_dir)
    positive_int("num_samples", num_samples)
    if rows is not None:
        positive_int("rows", rows)
    integer("refine_steps", refine_steps, minimum=0)
    resolve_device(device)
    spec, data, vae = load_run(run_dir, device=device)
    if refine_steps:
        _check_refinable(vae, run_dir)
    with locked(run_dir), seeded(spec.train.seed):  # the draws fixed by the run's seed, whatever the caller's state
        test = test_metrics(vae, data, num_samples=num_samples, rows=rows, progress=progress,
                            figures_dir=run_dir / "figures")
        if refine_steps:
            test["log_likelihood_refined"] = _refined_record(vae, data.test[:rows], test["log_likelihood"], num_samples,
                                                             refine_steps, progress)
        path = run_dir / "metrics.json"
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        metrics["test"] = test
        write_json(path, metrics)
        write_report(run_dir, metrics)
    return test


def _check_refinable(program: torch.nn.Module, run_dir: Path) -> None:
    """ConfigError unless the run's program is a VAE whose only latent is a real vector z (what a refined proposal covers)."""
    kind = kind_of(program).name
    reason = f"it is a {kind.replace('_', '-')} run" if kind != "generative" else None
    if reason is None:
        try:
            check_continuous_latents(program, "a refined proposal")
        except UnsupportedModelError:
            reason = "its latents are not one real vector z"
    if reason is not None:
        raise ConfigError(f"refine_steps (--refine-steps) needs a VAE run with one continuous latent z, and {run_dir} "
                          f"does not qualify ({reason}); evaluate it without --refine-steps")


def _refined_record(vae: torch.nn.Module, x: torch.Tensor, amortized: dict[str, Any], num_samples: int, steps: int,
                    progress: bool) -> dict[str, Any]:
    """metrics.json's record of log p(x) by IS from the refined encoder, and its gain over the encoder's own q."""
    device, dtype = module_placement(vae)
    r = refined_log_likelihood(vae, x.to(device=device, dtype=dtype), num_samples=num_samples, steps=steps,
                               progress=progress)
    est = r.log_likelihood
    return {"mean": est.mean, "stderr": est.stderr, "n": est.n, "num_samples": est.num_samples, "refine_steps": steps,
            "seconds": r.seconds, "gain": est.mean - amortized["mean"]}


def classify_run(run_dir: str | Path, *, dataset: str = "test", out: str | Path | None = None) -> Path:
    """Write argmax q(y | x) and q(y = c | x) of an M2 run for a split (test | val | train) or a data file
    (the file's rows go through the M1 run first for an M1+M2 run).

    The file (default ``RUN/predictions/<split or file stem>.csv``) is written atomically.
    """
    run_dir = Path(run_dir)
    spec, data, program = load_run(run_dir)
    if kind_of(program).name != "semi_supervised":
        raise ConfigError(f"{run_dir} holds a {type(program).__name__}, which has no classifier; classify runs of "
                          "model.program: m2")
    x, labels, name = semisup_results.rows_to_classify(data, dataset)
    if spec.data.m1 is not None and dataset not in semisup_results.SPLITS:  # new raw rows: through M1 first, as in training
        x = data.encode_rows(x, str(dataset))  # the M1 and its units that load_run's features came from
    with locked(run_dir):
        return semisup_results.write_predictions(program, x, labels, Path(out) if out else
                                                 run_dir / "predictions" / f"{name}.csv")


class Samples(NamedTuple):
    """What :func:`sample_run` drew and wrote: z ~ p(z), x ~ p(x | z) (``draws``), E[x | z] (``means``), and the files.

    ``z`` is the latent x is drawn from (site ``z``, else the program's first latent, e.g. z1 of the
    two-layer program); ``latents`` holds every latent site's draws by name.
    """

    z: torch.Tensor
    draws: torch.Tensor
    means: torch.Tensor
    files: dict[str, Path]
    latents: dict[str, torch.Tensor] = {}


def sample_run(run_dir: str | Path, *, n: int = 64, seed: int = 0, device: str | torch.device | None = None) -> Samples:
    """Draw ``n`` datapoints from a trained run: z ~ p(z), then x ~ p(x | z) and the decoder mean E[x | z].

    Any unconditional program is sampled ancestrally from its model (z2 ~ p(z2), z1 ~ p(z1 | z2)
    for the two-layer program; y ~ p(y) for M2).

    Writes ``samples/samples_n{n}_seed{seed}.pt`` (a dict with ``z``, ``draws``, ``means``) and,
    for image data, one PNG grid of the draws and one of the means. The same ``seed`` gives the
    same samples on one device; the global RNG is left as it was. ``device``: where to draw
    (the saved tensors are on the CPU).
    """
    positive_int("n", n)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    run_dir = Path(run_dir)
    target = resolve_device(device)
    _, data, vae = load_run(run_dir, device=target)
    if kind_of(vae).name == "conditional":
        raise ConfigError(f"{run_dir} holds a conditional program ({vae.task.label}): it samples completions of given "
                          f"data, not new datapoints; use `pyro-vae complete {run_dir} --mask ...`")
    sites = tuple(getattr(vae, "latents", ("z",)))
    with seeded(seed), torch.no_grad():
        trace = poutine.trace(vae.model).get_trace(num_samples=n)  # ancestral: every latent from its prior, then x
        latents = {site: trace.nodes[site]["value"].cpu() for site in sites}
        draws, means = trace.nodes["x"]["value"].cpu(), trace.nodes["x"]["fn"].mean.cpu()
    z = latents.get("z", latents[sites[0]])
    stem = f"samples_n{n}_seed{seed}"
    out = run_dir / "samples"
    with locked(run_dir):
        files = {"tensors": atomic_write(out / f"{stem}.pt", lambda fh: torch.save(
            {"z": z, "draws": draws, "means": means, "latents": latents}, fh), binary=True)}
        if data.image_shape is not None:
            files["draws"] = plot_sample_grid(draws, data.image_shape, out / f"{stem}_draws.png",
                                              f"Draws x ~ p(x | z), z ~ p(z) (n={n}, seed={seed})")
            files["means"] = plot_sample_grid(means, data.image_shape, out / f"{stem}_means.png",
                                              f"Means E[x | z], z ~ p(z) (n={n}, seed={seed})")
    return Samples(z, draws, means, files, latents)


def _by(monitor: str | None) -> str:
    """' by validation <score>' for the report's best-epoch phrase ('' without a score)."""
    return f" by validation {MONITOR_LABELS.get(monitor, monitor)}" if monitor else ""


def write_report(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """A short markdown summary embedding the figures."""
    test = metrics.get("test", {})
    lines = [f"# Run report: {run_dir.name}", ""]
    if "dataset" in metrics:
        lines.append(f"Dataset **{metrics['dataset']}**: {metrics.get('num_train')} training rows, {metrics.get('num_test')} test rows.")
    if "wall_time_s" in metrics:
        lines.append(f"Training: {len(metrics.get('history', []))} epochs in {metrics['wall_time_s']:.1f} s; best epoch {metrics.get('best_epoch')}{_by(metrics.get('monitor'))} ({metrics.get('stopped')}); KL for estimator B: {metrics.get('kl_mode')}.")
    lines.append("")
    if test:
        ll = test["log_likelihood"]
        lines += [
            "| metric (test, nats per datapoint) | value | std. error |",
            "|---|---|---|",
            f"| {test.get('quantity', 'log p(x)')}, importance sampling, K = {ll['num_samples']} | {ll['mean']:.3f} | {ll['stderr']:.3f} |",
            *_refined_rows(test),
            f"| ELBO, estimator A | {test['elbo_a']['mean']:.3f} | {test['elbo_a']['stderr']:.3f} |",
            f"| ELBO, estimator B | {test['elbo_b']['mean']:.3f} | {test['elbo_b']['stderr']:.3f} |",
            "",
            f"Active units (Cov_x E_q[z_u] > 0.01): {test['active_units']} of {len(test['kl_per_dim'])}.",
            "",
        ]
    if "semi_supervised" in test:
        lines += semisup_results.report_lines(test["semi_supervised"])
    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    for fig in figs:
        lines += [f"![{fig.stem}](figures/{fig.name})", ""]
    return write_text(run_dir / "report.md", "\n".join(lines))


def _refined_rows(test: dict[str, Any]) -> list[str]:
    """The report's row for ``log_likelihood_refined``, if the run was evaluated with --refine-steps."""
    r = test.get("log_likelihood_refined")
    if r is None:
        return []
    return [f"| log p(x), importance sampling from the encoder refined per row ({r['refine_steps']} steps), "
            f"K = {r['num_samples']} | {r['mean']:.3f} | {r['stderr']:.3f} |"]
