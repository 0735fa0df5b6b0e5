r"""Complete the test data of a trained run: ``complete_run(RUN, mask="quadrants:1", method=...)``.

A run holding a conditional program (``cvae``, ``cvae_baseline``) completes with its own model,
for the task it was trained for (another task is refused); a run holding an unconditional VAE
completes by inference over z (:mod:`inference.completion.samplers`, methods naive, sir, local_vi,
nuts, row_nuts, mwg, pseudo_gibbs) under any mask, or under a pooling factor (super-resolution through the
observation model x_lr ~ N(pool(E[x | z]), sigma^2)). On the first ``rows`` test rows it
measures the completion yardstick (conditional NLL in nats per datapoint with its standard error,
PSIS k-hat and -ELBO; for a VAE under super-resolution the conditional NLL is not computed) and the
image metrics (:mod:`inference.completion.metrics`), and writes, atomically and under the run
folder's lock, ``RUN/completion/<setting>/`` (``metrics.json``, ``report.md``, ``grid.png``) and
the index ``RUN/completion/metrics.json`` of every setting so far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch

from inference.completion.metrics import image_metrics
from inference.completion.runs import GRID_ROWS, input_shape, shown_input
from inference.completion.samplers import METHODS, complete_by_inference
from inference.completion.yardstick import score_conditional, score_vae_completion
from inference.devices import resolve_device
from inference.run import load_run
from inference.run_folder import locked
from pyro_vae.checks import boolean, choice, positive_float, positive_int, seed as check_seed
from pyro_vae.completion import build_task, same_task
from pyro_vae.cvae import is_conditional
from pyro_vae.errors import ConfigError
from pyro_vae.files import write_json, write_text
from pyro_vae.masks import parse_mask
from pyro_vae.observation import LowResolution, ObservedPart
from pyro_vae.plots.completion import plot_completion_grid
from pyro_vae.rng import seeded

MODEL_METHOD = "model"  # a conditional program completes with its own p(y | c)
ALL_METHODS = (MODEL_METHOD, *METHODS)
PROPOSALS = ("defensive", "local_vi", "nuts")  # of log p(x_obs) for a VAE run


class CompletionResult(NamedTuple):
    """What :func:`complete_run` measured (``metrics``) and the files it wrote."""

    setting: str
    metrics: dict[str, Any]
    files: dict[str, Path]


def _task_of(mask_text: str, data: Any):
    kind, arg = parse_mask(mask_text)
    if kind == "superres":
        return build_task("superres", data.feature_dim, data.image_shape, factor=arg)
    return build_task("inpaint", data.feature_dim, data.image_shape, mask=arg.kind, observed=arg.observed,
                      fraction=arg.fraction, seed=arg.seed)


def _check(program: Any, method: str | None, rows: int, samples: int, data: Any) -> str:
    conditional = is_conditional(program)
    method = method or (MODEL_METHOD if conditional else "sir")
    if method not in ALL_METHODS:
        raise ConfigError(f"--method {method!r} is not valid; choose one of: {', '.join(ALL_METHODS)}")
    if conditional and method != MODEL_METHOD:
        raise ConfigError(f"this run holds a conditional program that completes with its own model: use --method "
                          f"{MODEL_METHOD} (or none); --method {method} completes an unconditional VAE run by inference")
    if not conditional and method == MODEL_METHOD:
        raise ConfigError(f"--method {MODEL_METHOD} needs a conditional run (cvae); complete a VAE run by inference "
                          f"with --method {' | '.join(METHODS)}")
    positive_int("rows", rows)
    positive_int("samples", samples)
    if rows > len(data.test) or rows < 2:
        raise ConfigError(f"--rows {rows} is not possible: the run's test split has {len(data.test)} rows and a "
                          "standard error needs at least 2; pass --rows between 2 and that")
    return method


def _complete_vae(vae: Any, task: Any, x: torch.Tensor, method: str, samples: int, num_samples: int,
                  sigma: float, seed: int, proposal: str, progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
    if task.kind == "superres":
        obs = LowResolution(vae, task.image_shape, task.factor, sigma)
        out = complete_by_inference(obs, task.condition(x), method=method, num_samples=samples, seed=seed,
                                    progress=progress)
        return out.means, {"seconds": out.seconds, "conditional_nll": None}
    obs = ObservedPart(vae, task.mask)
    out = complete_by_inference(obs, x, method=method, num_samples=samples, seed=seed, progress=progress)
    if proposal == "local_vi" and out.proposal is not None:  # method local_vi fitted this proposal to these rows
        proposal = out.proposal
    score = score_vae_completion(vae, x, task.mask, num_samples=num_samples, proposal=proposal, seed=seed,
                                 progress=progress)
    extra = {"seconds": out.seconds, **score.metrics()}
    if out.accept_rate is not None:
        extra["accept_rate"] = out.accept_rate
    return out.means, extra


def complete_run(run_dir: str | Path, *, mask: str = "quadrants:1", method: str | None = None, rows: int = 100,
                 samples: int = 8, num_samples: int = 1000, sigma: float = 0.05, proposal: str = "local_vi",
                 seed: int = 0, device: str | torch.device | None = None, progress: bool = True) -> CompletionResult:
    """Complete the first ``rows`` test rows of a run under ``mask`` (``quadrants:N``, ``random:F``, ``center``,
    ``rows:F``, ``downsample:F``) with ``samples`` completions each (module docstring).

    ``method``: ``model`` for a conditional run (the default there), else one of
    :data:`~inference.completion.samplers.METHODS` (default ``sir``). ``num_samples``: K of the
    importance-sampled conditional NLL. ``sigma``: noise sd of the low-resolution observation model
    (VAE super-resolution). ``proposal``: of log p(x_obs) for a VAE run, ``defensive``, ``local_vi`` or ``nuts``
    (:func:`~inference.completion.yardstick.score_vae_completion`). ``device``: where the program runs
    (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``; default cpu); the metrics and figures are computed
    on CPU copies. ``progress``: a bar on a terminal, a line a minute in a log, for the methods that take long
    (``local_vi``, NUTS). Every argument is checked before anything is computed or written.
    """
    run_dir = Path(run_dir)
    positive_int("num_samples", num_samples)
    positive_float("sigma", sigma)
    check_seed("seed", seed)
    choice("proposal", proposal, PROPOSALS)
    boolean("progress", progress)
    target = resolve_device(device)
    spec, data, program = load_run(run_dir, device=target)
    task = _task_of(mask, data)
    method = _check(program, method, rows, samples, data)
    if is_conditional(program):
        same_task(program.task, task)
    x = data.test[:rows].to(target)
    setting = f"{mask.replace(':', '-')}_{method}"
    with seeded(seed):
        if is_conditional(program):
            comps = program.complete(x, samples, mean=True)
            extra = score_conditional(program, x, num_samples=num_samples, seed=seed).metrics()
        else:
            comps, extra = _complete_vae(program, task, x, method, samples, num_samples, sigma, seed, proposal,
                                         progress)
    comps, x = comps.detach().float().cpu(), x.float().cpu()
    low = task.condition(x) if task.kind == "superres" else None
    missing = ~task.mask if task.kind == "inpaint" else None
    metrics = {"setting": setting, "mask": mask, "method": method, "task": task.label, "rows": rows,
               "program": spec.model.program.name, **extra,
               **image_metrics(comps, x, data.image_shape, missing=missing, low_res=low, factor=task.factor)}
    return CompletionResult(setting, metrics, _write(run_dir, setting, metrics, task, x, comps, data.image_shape))


def _write(run_dir: Path, setting: str, metrics: dict[str, Any], task: Any, x: torch.Tensor, comps: torch.Tensor,
           image_shape: Any) -> dict[str, Path]:
    folder = run_dir / "completion" / setting
    with locked(run_dir):
        files = {"metrics": write_json(folder / "metrics.json", metrics)}
        if image_shape is not None:
            n = min(GRID_ROWS, x.shape[0])
            files["grid"] = plot_completion_grid(
                shown_input(task, x[:n]), comps[:, :n], x[:n], image_shape, folder / "grid.png",
                f"{metrics['program']} {setting}: input | completions | truth | sd", input_shape=input_shape(task))
        files["report"] = write_text(folder / "report.md", _report(metrics, "grid" in files))
        index_path = run_dir / "completion" / "metrics.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        index[setting] = metrics
        files["index"] = write_json(index_path, index)
    return files


def _report(m: dict[str, Any], grid: bool) -> str:
    lines = [f"# Completion: {m['setting']}", "", f"Program `{m['program']}`, task {m['task']}, method {m['method']}, "
             f"{m['rows']} test rows, {m['samples']} completions each.", "", "| metric | value | std. error |", "|---|---|---|"]
    for key in ("conditional_nll", "neg_elbo", "psnr_mean", "psnr_best", "ssim_mean", "ssim_best", "pixel_sd",
                "reobservation_rmse"):
        if m.get(key) is not None:
            lines.append(f"| {key} | {m[key]:.4f} | {m.get(key + '_stderr', float('nan')):.4f} |")
    if "khat_max" in m:
        lines += ["", f"PSIS k-hat of the proposals: max {m['khat_max']:.2f}, share above 0.7: "
                      f"{m['khat_share_above_0.7']:.2f}. Conditional NLL in nats per datapoint (K = {m['num_samples']})."]
    if grid:
        lines += ["", "![completions](grid.png)"]
    return "\n".join(lines) + "\n"


__all__ = ["complete_run", "CompletionResult", "ALL_METHODS", "MODEL_METHOD", "PROPOSALS"]
