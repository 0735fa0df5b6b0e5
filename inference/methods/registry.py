r"""One interface to every inference method: ``fit(spec, data, method=..., budget=...)``, scored by ``score``.

A method learns the model's parameters theta from ``data.train`` and says how to build an
importance-sampling proposal q(z | x) for any rows x. Every method is then scored by the ONE
yardstick, :func:`inference.evaluate.log_likelihood`::

    log p_theta(x_i) ~= logsumexp_k [log p_theta(x_i, z_ik) - log q(z_ik | x_i)] - log K,   z_ik ~ q(z | x_i)

Methods differ in how they fit, never in how they are scored. A method is one runner function
registered in :data:`METHODS` (see :mod:`inference.methods.svi_methods`,
:mod:`inference.methods.baseline_methods`, :mod:`inference.methods.mcmc_method`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from inference import evaluate
from inference.devices import on_module, resolve_device
from inference.evaluate import Estimate
from inference.methods.budget import Budget
from inference.methods.result import MethodResult
from inference.training.settings import check_batch_size
from pyro_vae.checks import boolean, fraction, got, mapping, name_string
from pyro_vae.data import DataSplits, check_data_splits
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.registry import Registry
from pyro_vae.rng import seeded
from pyro_vae.spec import RunSpec, load_spec
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
DEFAULT_CHECKPOINTS = (1.0,)


MethodRunner = Callable[..., MethodResult]


METHODS: Registry[MethodResult] = Registry("inference method")


def method_names() -> list[str]:
    """The registered method names."""
    return METHODS.names()


def check_methods(methods: Sequence[str]) -> list[str]:
    """The names, validated (ConfigError listing the valid ones for an unknown name)."""
    names = [m.strip() for m in methods if m.strip()]
    if not names:
        raise ConfigError(f"no method given; valid methods are: {', '.join(method_names())}")
    for name in names:
        METHODS.get(name)
    return names


def fit(
    spec: RunSpec | Mapping[str, Any] | str | None,
    data: DataSplits,
    *,
    method: str,
    budget: Budget | str,
    checkpoints: Sequence[float] = DEFAULT_CHECKPOINTS,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> MethodResult:
    """Train a fresh model of ``spec`` on ``data.train`` with ``method`` within ``budget``.

    The model is built by :func:`inference.run.new_program` (seeded by ``spec.train.seed``), so
    every method starts from the same initial weights. ``checkpoints``: fractions in (0, 1] of
    the budget at which to keep the state (1.0 is always added); ``device``: where to train (overrides
    ``spec.train.device``; mcem and mcmc run on the CPU only); ``options``: keyword
    arguments for the method's fit function (e.g. ``weight_decay`` for ``map``, ``hmc_steps``
    for ``mcem``).

    Every argument is checked before anything trains: the spec, the data splits (a
    ``train.batch_size`` larger than the training rows is refused), the method's name, the
    budget, the checkpoints and the options.
    """
    spec = placed(load_spec(spec), device)
    check_batch_size(spec.train, check_data_splits(data))
    runner = METHODS.get(name_string("method", method))
    budget = Budget.parse(budget)
    fractions = _fractions(checkpoints)
    mapping("options", options, optional=True)
    boolean("progress", progress)
    t0 = time.perf_counter()
    result = runner(spec, data, budget, fractions=fractions, options=dict(options or {}), progress=progress)
    logger.info("%s: %d epochs, %.1f s, %d samples evaluated (%.1f s with probes and checkpoint runs)",
                method, result.epochs, result.wall_time, result.samples_evaluated, time.perf_counter() - t0)
    return result


def placed(spec: RunSpec, device: str | torch.device | None) -> RunSpec:
    """``spec`` with ``train.device`` resolved on this machine (``device``, when given, overrides it); ConfigError
    naming what the machine has for a device it lacks. The SVI methods, map and local-vi train there; mcem and
    mcmc run on the CPU only and refuse another device (UnsupportedModelError: compare records the reason)."""
    name = "device" if device is not None else "train.device"
    resolved = resolve_device(spec.train.device if device is None else device, name=name)
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, device=str(resolved)))


def require_cpu(method: str, spec: RunSpec) -> None:
    """UnsupportedModelError for a method that runs on the CPU only, asked for another ``train.device``."""
    if spec.train.device != "cpu":
        raise UnsupportedModelError(f"{method} runs on the CPU only, not on "
                                    f"{spec.train.device}; compare it with --device cpu")


def _fractions(checkpoints: Sequence[float]) -> tuple[float, ...]:
    if not isinstance(checkpoints, (list, tuple)):
        raise ConfigError(f"checkpoints must be a list of fractions of the budget in (0, 1], {got(checkpoints)}; "
                          "e.g. [0.25, 0.5, 1.0]")
    out = set()
    for f in checkpoints:
        out.add(fraction("checkpoints (fractions of the budget)", f, closed=False))
    out.add(1.0)
    return tuple(sorted(out))


def proposal_for(result: MethodResult, x: Tensor) -> Callable[..., Any]:
    """The method's IS proposal for the rows x (a guide callable sharing the model's data plate)."""
    return result.proposal(on_module(result.vae, x))


def score(
    result: MethodResult,
    x: Tensor,
    num_samples: int = 1000,
    *,
    proposal: Callable[..., Any] | None = None,
    batch_size: int = 100,
    seed: int | None = None,
    progress: bool = False,
) -> Estimate:
    """log p_theta(x_i) by :func:`inference.evaluate.log_likelihood` with K = ``num_samples``.

    = logsumexp_k [log p(x_i, z_ik) - log q(z_ik | x_i)] - log K, z_ik ~ q = ``proposal_for(result, x)``
    (or ``proposal``, e.g. one already fitted to x). ``seed`` fixes the draws (:func:`scoring`).
    """
    vae = result.vae
    vae.check_data(x)
    x = on_module(vae, x)
    with scoring(vae, seed):
        guide = proposal if proposal is not None else proposal_for(result, x)
        return evaluate.log_likelihood(vae.model, guide, x, num_samples=num_samples, batch_size=batch_size, progress=progress)


@contextlib.contextmanager
def scoring(vae: VAE, seed: int | None) -> Iterator[None]:
    """Eval mode for the duration (restored after), and the RNGs seeded when ``seed`` is given (:func:`pyro_vae.rng.seeded`)."""
    was_training = vae.training
    vae.eval()
    try:
        with seeded(seed):
            yield
    finally:
        vae.train(was_training)


def test_elbo(
    result: MethodResult,
    x: Tensor,
    *,
    num_particles: int = 100,
    proposal: Callable[..., Any] | None = None,
    seed: int | None = None,
) -> Estimate | None:
    """ELBO_i = (1/K) sum_k [log p(x_i, z_ik) - log q(z_ik | x_i)] of the method's variational q (estimator A);
    None where the proposal is not a variational posterior (``mcem``, ``mcmc``: Gaussians fitted to draws)."""
    if not result.elbo_defined:
        return None
    vae = result.vae
    x = on_module(vae, x)
    with scoring(vae, seed):
        guide = proposal if proposal is not None else proposal_for(result, x)
        return evaluate.elbo(vae.model, guide, x, estimator="A", num_particles=num_particles)





def check_options(method: str, fn: Callable[..., Any], options: Mapping[str, Any], reserved: Sequence[str]) -> None:
    """ConfigError for options that ``fn`` does not take as keywords, or that the budget/spec set."""
    clash = sorted(k for k in options if k in reserved)
    if clash:
        raise ConfigError(f"method {method!r}: {clash} are set by the budget or the spec, not by options")
    params = inspect.signature(fn).parameters
    takes = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in reserved]
    bad = sorted(k for k in options if k not in takes)
    if bad and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"method {method!r} got unknown option(s) {bad}; it accepts: {', '.join(takes)}")



__all__ = [
    "METHODS", "MethodRunner", "method_names", "check_methods", "fit", "score", "test_elbo", "proposal_for",
    "scoring", "check_options", "placed", "require_cpu", "DEFAULT_CHECKPOINTS",
]
