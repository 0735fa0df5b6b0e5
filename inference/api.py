r"""One interface to every inference method: ``fit(spec, data, method=..., budget=...)`` and ``score``.

A method learns the model's parameters theta (prior, likelihood, decoder) from ``data.train``
and says how to build an importance-sampling proposal q(z | x) for any rows x. Every method
is then scored by the ONE yardstick, :func:`inference.evaluate.log_likelihood`::

    log p_theta(x_i) ~= logsumexp_k [log p_theta(x_i, z_ik) - log q(z_ik | x_i)] - log K,   z_ik ~ q(z | x_i)

Methods differ in how they fit, never in how they are scored. The methods (:data:`METHODS`):

============== ============================================== ==================================================
name           fit (theta, and phi where there is an encoder) proposal q(z | x) for scoring
============== ============================================== ==================================================
svi-trace      :func:`inference.svi.fit`, estimator A          the encoder q_phi(z | x) (amortized)
svi-meanfield  :func:`inference.svi.fit`, estimator B          the encoder
iwae           :func:`inference.svi.fit`, IWAE bound, K        the encoder
rws            :func:`inference.svi.fit`, reweighted wake-     the encoder
               sleep, K
map            :func:`inference.map.fit_map` (MAP codes z_i)   :func:`inference.map.map_proposal`: local VI q_i
                                                               on the scored rows, started at their MAP codes
local-vi       :func:`inference.local_vi.fit_local_vi` (one    :func:`inference.local_vi.fit_local`: local VI q_i
               q_i per training row)                           on the scored rows, theta fixed
mcem           :func:`inference.mcem.fit_mcem` (HMC E-step,    :func:`inference.mcem.mcem_proposal`: local VI q_i
               gradient M-step)                                on the scored rows
mcmc           :func:`inference.mcmc.fit_bayesian`: NUTS over  Gaussian fitted to NUTS draws of z given theta
               (W, mu, z) of a SMALL linear-Gaussian model     (:func:`inference.mcmc.sample_latents`)
============== ============================================== ==================================================

``iwae`` and ``rws`` use K = ``options["num_particles"]`` if given, else ``train.num_particles``
when it is above 1, else :data:`IW_PARTICLES` (IWAE with K = 1 is estimator A; RWS's wake-phi
needs K >= 2; ``rws`` with ``num_particles=1`` is classic wake-sleep, see
:class:`inference.objectives.ReweightedWakeSleep`).
``map`` and ``local-vi`` ignore ``train.elbo`` where it does not apply and run without early
stopping (they have no validation score). ``mcmc`` means fully Bayesian NUTS: it runs only
for the pPCA model (prior ``normal``, ``linear`` decoder, ``gaussian`` likelihood with fixed
sigma) with at most :data:`MCMC_MAX_LATENTS` latent coordinates N d, and raises
UnsupportedModelError otherwise (use ``mcem`` -- MCMC on z, EM on theta -- for a VAE). Its
theta is the posterior mean of mu and the rank-d eigen-square-root of the posterior mean of
W W^T (W itself is identified only up to rotation).

**Budgets** (:class:`Budget`): epochs, seconds of training wall time, or training samples
evaluated (each method's own count: rows x particles for SVI, gradient rows for MCEM, ...);
with several, training stops at the first reached. SVI methods run epoch by epoch through
``svi.fit``'s in-memory state (``state=``), so a budgeted run is exactly an uninterrupted
run of the same number of epochs; a seconds budget ends at the epoch boundary nearest to the
budget (the remaining time is covered in calls of at most half of it, each re-measuring the
pace). ``map`` and ``local-vi`` learn their epochs-per-second and samples-per-epoch from a
one-epoch probe on a fresh model (not counted in the result) and then run the whole number of
epochs; ``mcem`` stops on its own ``budget_seconds``.

**Checkpoints**: ``fit(..., checkpoints=(0.25, 0.5, 1.0))`` also returns the state reached
at those fractions of the budget (``MethodResult.checkpoints``, each a scoreable
:class:`MethodResult`). SVI records them along its one run; ``map``, ``local-vi`` and
``mcem`` re-run from the same seed with the shorter budget (their runs are deterministic
prefixes of the longer run when the budget is in epochs or samples); ``mcmc`` returns only
the final state.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import pyro
import torch

from inference import evaluate
from inference.evaluate import Estimate
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.registry import Registry
from pyro_vae.spec import RunSpec, load_spec
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
Proposal = Callable[[Tensor], Callable[..., Any]]  # rows x -> a guide for them (model-compatible)

IW_PARTICLES = 5  # K for iwae/rws when train.num_particles is 1
MCMC_MAX_LATENTS = 5000  # N * d above which fully Bayesian NUTS is refused
MCMC_PROPOSAL_DRAWS = 200  # NUTS warm-up and draws for the mcmc method's scoring proposal
DEFAULT_CHECKPOINTS = (1.0,)
_BIG_EPOCHS = 10**9  # "no epoch limit" for fit_mcem when the budget is in seconds only


# -- budgets ------------------------------------------------------------------------------------
_BUDGET_TERM = re.compile(
    r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>s|sec|secs|seconds?|m|min|minutes?|epochs?|samples?)\s*$"
)


@dataclass(frozen=True)
class Budget:
    """How long a method may train: ``epochs``, ``seconds`` of wall time, training ``samples``
    evaluated. Any combination; training stops when the first is reached; at least one is set."""

    epochs: int | None = None
    seconds: float | None = None
    samples: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is None and self.seconds is None and self.samples is None:
            raise ConfigError("a Budget needs epochs, seconds or samples, e.g. Budget(epochs=20) or Budget.parse('60s')")
        for name in ("epochs", "samples"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"budget {name} must be a positive integer, got {v!r}")
        if self.seconds is not None and (isinstance(self.seconds, bool) or not self.seconds > 0):
            raise ConfigError(f"budget seconds must be > 0, got {self.seconds!r}")

    @classmethod
    def parse(cls, text: str | "Budget") -> "Budget":
        """``"60s"``, ``"2min"``, ``"20epochs"``, ``"1e6samples"``, or several joined by commas ("60s,20epochs")."""
        if isinstance(text, Budget):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"budget {text!r} is empty; write e.g. 60s, 2min, 20epochs or 1e6samples")
        found: dict[str, float] = {}
        for term in text.split(","):
            m = _BUDGET_TERM.match(term)
            if m is None:
                raise ConfigError(
                    f"cannot read budget {term.strip()!r}: write a number and a unit, e.g. 60s, 2min, 20epochs or "
                    "1e6samples (several joined by commas: training stops at the first reached)"
                )
            value, unit = float(m["num"]), m["unit"].lower()
            key = "epochs" if unit.startswith("epoch") else "samples" if unit.startswith("sample") else "seconds"
            if unit in ("m", "min", "minute", "minutes"):
                value *= 60.0
            if key in found:
                raise ConfigError(f"budget {text!r} gives {key} twice")
            if key != "seconds":
                if value != int(value) or value < 1:
                    raise ConfigError(f"budget {term.strip()!r}: {key} must be a positive whole number")
                value = int(value)
            found[key] = value
        return cls(**found)

    def max_epochs(self, samples_per_epoch: int) -> int | None:
        """The epoch limit implied by ``epochs`` and ``samples`` (ceil(samples / samples_per_epoch)); None if neither."""
        limits = []
        if self.epochs is not None:
            limits.append(self.epochs)
        if self.samples is not None:
            limits.append(max(1, math.ceil(self.samples / max(1, samples_per_epoch))))
        return min(limits) if limits else None

    def __str__(self) -> str:
        parts = []
        if self.epochs is not None:
            parts.append(f"{self.epochs} epochs")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} s")
        if self.samples is not None:
            parts.append(f"{self.samples:.3g} samples")
        return " or ".join(parts)


# -- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodResult:
    """What one inference method produced.

    ``vae``: the trained model (theta; and phi for amortized methods); ``proposal``: x -> a
    guide for the rows x (the IS proposal of :func:`score`); ``history``: the method's per-epoch
    records; ``wall_time``: training seconds; ``samples_evaluated``: the method's own count of
    training-sample evaluations; ``epochs``: epochs run (transitions for ``mcmc``);
    ``elbo_defined``: whether the proposal is a variational q fitted by maximizing an ELBO (then
    :func:`test_elbo` reports its ELBO); ``checkpoints``: the states reached at fractions of the
    budget (each a MethodResult, the last one this result itself); ``fraction``: this state's
    fraction of the budget; ``notes``: settings worth reporting (particles, ...).
    """

    method: str
    vae: VAE
    proposal: Proposal
    history: tuple[Any, ...]
    wall_time: float
    samples_evaluated: int
    epochs: int
    elbo_defined: bool
    checkpoints: tuple["MethodResult", ...] = ()
    fraction: float = 1.0
    notes: str = ""


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


# -- the one entry point --------------------------------------------------------------------------
def fit(
    spec: RunSpec | Mapping[str, Any] | str | None,
    data: DataSplits,
    *,
    method: str,
    budget: Budget | str,
    checkpoints: Sequence[float] = DEFAULT_CHECKPOINTS,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> MethodResult:
    """Train a fresh model of ``spec`` on ``data.train`` with ``method`` within ``budget``.

    The model is built by :func:`inference.run.new_vae` (seeded by ``spec.train.seed``), so
    every method starts from the same initial weights. ``checkpoints``: fractions in (0, 1] of
    the budget at which to keep the state (1.0 is always added); ``options``: keyword
    arguments for the method's fit function (e.g. ``weight_decay`` for ``map``, ``hmc_steps``
    for ``mcem``).
    """
    spec = load_spec(spec)
    budget = Budget.parse(budget)
    runner = METHODS.get(method)
    fractions = _fractions(checkpoints)
    t0 = time.perf_counter()
    result = runner(spec, data, budget, fractions=fractions, options=dict(options or {}), progress=progress)
    logger.info("%s: %d epochs, %.1f s, %d samples evaluated (%.1f s with probes and checkpoint runs)",
                method, result.epochs, result.wall_time, result.samples_evaluated, time.perf_counter() - t0)
    return result


def _fractions(checkpoints: Sequence[float]) -> tuple[float, ...]:
    out = set()
    for f in checkpoints:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ConfigError(f"checkpoints are fractions of the budget in (0, 1], got {f!r}")
        out.add(float(f))
    out.add(1.0)
    return tuple(sorted(out))


# -- scoring: the one yardstick -------------------------------------------------------------------
def proposal_for(result: MethodResult, x: Tensor) -> Callable[..., Any]:
    """The method's IS proposal for the rows x (a guide callable sharing the model's data plate)."""
    return result.proposal(x)


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
    (or ``proposal``, e.g. one already fitted to x). ``seed`` seeds Pyro's RNGs first.
    """
    vae = result.vae
    vae.check_data(x)
    with _scoring(vae, seed):
        guide = proposal if proposal is not None else proposal_for(result, x)
        return evaluate.log_likelihood(vae.model, guide, x, num_samples=num_samples, batch_size=batch_size, progress=progress)


@contextlib.contextmanager
def _scoring(vae: VAE, seed: int | None) -> Iterator[None]:
    """Eval mode for the duration (restored after), and Pyro's RNGs seeded when ``seed`` is given."""
    was_training = vae.training
    vae.eval()
    try:
        if seed is not None:
            pyro.set_rng_seed(seed)
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
    with _scoring(vae, seed):
        guide = proposal if proposal is not None else proposal_for(result, x)
        return evaluate.elbo(vae.model, guide, x, estimator="A", num_particles=num_particles)


# -- helpers shared by the runners ------------------------------------------------------------------
def _new_vae(spec: RunSpec, data: DataSplits) -> VAE:
    from inference.run import new_vae

    return new_vae(spec, data)


def _snapshot(
    method: str,
    vae: VAE,
    make_proposal: Callable[[VAE], Proposal],
    fit_result: Any,
    *,
    epochs: int,
    elbo_defined: bool,
    fraction: float,
    notes: str,
    checkpoints: tuple[MethodResult, ...] = (),
    copy_vae: bool = True,
) -> MethodResult:
    held = copy.deepcopy(vae) if copy_vae else vae
    return MethodResult(
        method, held, make_proposal(held), tuple(fit_result.history), float(fit_result.wall_time),
        int(fit_result.samples_evaluated), int(epochs), elbo_defined, checkpoints, fraction, notes,
    )


def _check_options(method: str, fn: Callable[..., Any], options: Mapping[str, Any], reserved: Sequence[str]) -> None:
    """ConfigError for options that ``fn`` does not take as keywords, or that the budget/spec set."""
    import inspect

    clash = sorted(k for k in options if k in reserved)
    if clash:
        raise ConfigError(f"method {method!r}: {clash} are set by the budget or the spec, not by options")
    params = inspect.signature(fn).parameters
    takes = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in reserved]
    bad = sorted(k for k in options if k not in takes)
    if bad and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"method {method!r} got unknown option(s) {bad}; it accepts: {', '.join(takes)}")


def _with_final(points: list[MethodResult]) -> MethodResult:
    """The last point, carrying all points (itself included) as its checkpoints."""
    final = points[-1]
    return dataclasses.replace(final, checkpoints=tuple(points[:-1]) + (dataclasses.replace(final, checkpoints=()),))


# -- SVI methods: one run, extended epoch by epoch by continuing its state in memory ---------------------------
def _svi_runner(objective: str, method: str) -> MethodRunner:
    def run(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
            options: dict[str, Any], progress: bool) -> MethodResult:
        from inference import svi

        allowed = {"num_particles"} if objective in ("iwae", "rws") else set()
        if set(options) - allowed:
            raise ConfigError(
                f"method {method!r} takes its settings from the spec's train section; options "
                f"{sorted(set(options) - allowed)} are not accepted (allowed: {sorted(allowed) or 'none'})"
            )
        k = options.get("num_particles", spec.train.num_particles)
        if objective in ("iwae", "rws") and "num_particles" not in options and k == 1:
            k = IW_PARTICLES
        train = dataclasses.replace(spec.train, elbo=objective, num_particles=k)
        vae = _new_vae(spec, data)
        n = int(data.train.shape[0])
        max_epochs = budget.max_epochs(n * k)
        notes = f"K={k}" if objective in ("iwae", "rws") else ""

        def proposal(v: VAE) -> Proposal:
            return lambda x: v.guide

        points: list[MethodResult] = []
        fit = None
        done = 0
        pace = math.nan  # seconds per epoch of the last svi.fit call (budgets in seconds)
        stop = False
        for f in fractions:
            cap = max(1, round(f * max_epochs)) if max_epochs is not None else None
            while not stop:
                if budget.seconds is None:
                    target = cap
                elif fit is None:
                    target = 1
                else:
                    # epochs left to the nearest epoch boundary, at the last call's pace; run at most
                    # half of them (rounded up) per call, so the pace is re-measured as the end nears
                    remaining = f * budget.seconds - fit.wall_time
                    left = max(0, math.floor(remaining / pace + 0.5))
                    target = done + (left if left <= 2 else math.ceil(left / 2))
                    if cap is not None:
                        target = min(target, cap)
                if target <= done:
                    break
                before = (done, fit.wall_time if fit is not None else 0.0)
                # the fit continues its own state in memory: a budgeted run is one uninterrupted run
                fit = svi.fit(vae, data, dataclasses.replace(train, epochs=target),
                              state=fit.state if fit is not None else None, progress=progress)
                done = fit.history[-1].epoch if fit.history else target
                pace = (fit.wall_time - before[1]) / max(1, done - before[0])
                stop = fit.stopped == "early_stopping"
                if budget.seconds is None:
                    break
            if fit is not None:
                points.append(_snapshot(method, vae, proposal, fit, epochs=done, elbo_defined=True,
                                        fraction=f, notes=notes))
        return _with_final(points)

    run.__doc__ = f"SVI with objective {objective!r} (inference.svi.fit); proposal: the encoder"
    return run


for _name, _objective in (("svi-trace", "trace"), ("svi-meanfield", "meanfield"), ("iwae", "iwae"), ("rws", "rws")):
    METHODS.register(_name, _svi_runner(_objective, _name))


# -- epoch-based methods without resume: map, local-vi (probe, then runs of whole epochs) -------------
def _plan_epochs(budget: Budget, probe: Callable[[], Any] | None, samples_per_epoch: int | None) -> tuple[int, str]:
    """Epochs to run within ``budget``: from the epoch/sample limits, and for seconds from a 1-epoch probe."""
    note = ""
    limits = []
    if budget.epochs is not None:
        limits.append(budget.epochs)
    if budget.samples is not None or budget.seconds is not None:
        if samples_per_epoch is None or budget.seconds is not None:
            assert probe is not None
            result = probe()
            if samples_per_epoch is None:
                samples_per_epoch = max(1, int(result.samples_evaluated))
            if budget.seconds is not None:
                per_epoch = float(result.history[-1].seconds)
                overhead = max(0.0, float(result.wall_time) - per_epoch)
                limits.append(max(1, math.floor((budget.seconds - overhead) / per_epoch + 0.5)))
                note = f"probe: {per_epoch:.3g} s/epoch"
        if budget.samples is not None:
            limits.append(max(1, math.ceil(budget.samples / samples_per_epoch)))
    return min(limits), note


def _prefix_runs(
    method: str,
    fractions: tuple[float, ...],
    total_epochs: int,
    train_for: Callable[[int], tuple[VAE, Any]],
    make_proposal: Callable[[VAE], Proposal],
    elbo_defined: bool,
    notes: str,
) -> MethodResult:
    """One fresh run per checkpoint, of round(f x total_epochs) epochs (deterministic prefixes of the full run)."""
    points: list[MethodResult] = []
    seen: dict[int, MethodResult] = {}
    for f in fractions:
        epochs = max(1, round(f * total_epochs)) if f < 1 else total_epochs
        if epochs not in seen:
            vae, fit_result = train_for(epochs)
            seen[epochs] = _snapshot(method, vae, make_proposal, fit_result, epochs=epochs, elbo_defined=elbo_defined,
                                     fraction=f, notes=notes, copy_vae=False)
        points.append(dataclasses.replace(seen[epochs], fraction=f))
    return _with_final(points)


@METHODS.register("map")
def _run_map(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
             options: dict[str, Any], progress: bool) -> MethodResult:
    """MAP codes z_i and theta (inference.map.fit_map); proposal: local VI started at the MAP codes"""
    from inference.map import fit_map, map_proposal

    _check_options("map", fit_map, options, ("vae", "data", "train", "epochs", "progress"))
    train = dataclasses.replace(spec.train, patience=None)

    def train_for(epochs: int) -> tuple[VAE, Any]:
        vae = _new_vae(spec, data)
        return vae, fit_map(vae, data, train, epochs=epochs, progress=progress, **options)

    epochs, note = _plan_epochs(budget, lambda: train_for(1)[1], int(data.train.shape[0]))
    wd = options.get("weight_decay", 0.0)
    return _prefix_runs("map", fractions, epochs, train_for, lambda v: (lambda x: map_proposal(v, x).guide), True,
                        "; ".join(s for s in (f"weight_decay={wd:g}", note) if s))


@METHODS.register("local-vi")
def _run_local_vi(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
                  options: dict[str, Any], progress: bool) -> MethodResult:
    """One Gaussian q_i per training row, learned with theta (inference.local_vi.fit_local_vi); proposal: local VI"""
    from inference.local_vi import fit_local, fit_local_vi

    elbo = spec.train.elbo if spec.train.elbo in ("trace", "meanfield") else "meanfield"
    train = dataclasses.replace(spec.train, patience=None, elbo=elbo)
    _check_options("local-vi", fit_local_vi, options, ("vae", "data", "train", "epochs", "progress"))

    def train_for(epochs: int) -> tuple[VAE, Any]:
        vae = _new_vae(spec, data)
        return vae, fit_local_vi(vae, data, train, epochs=epochs, progress=progress, **options)

    k = train.num_particles
    epochs, note = _plan_epochs(budget, lambda: train_for(1)[1], int(data.train.shape[0]) * k)
    return _prefix_runs("local-vi", fractions, epochs, train_for,
                        lambda v: (lambda x: fit_local(v, x, init="prior", progress=False).guide), True,
                        "; ".join(s for s in (f"elbo={elbo}", note) if s))


@METHODS.register("mcem")
def _run_mcem(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
              options: dict[str, Any], progress: bool) -> MethodResult:
    """Monte Carlo EM with persistent HMC chains (inference.mcem.fit_mcem); proposal: local VI q_i"""
    from inference.mcem import fit_mcem, mcem_proposal

    _check_options("mcem", fit_mcem, options, ("vae", "data", "epochs", "budget_seconds", "progress"))
    t = spec.train
    settings = {"batch_size": t.batch_size, "lr": t.lr, "seed": t.seed, **options}

    def train_for(epochs: int, seconds: float | None = None) -> tuple[VAE, Any]:
        vae = _new_vae(spec, data)
        return vae, fit_mcem(vae, data, epochs=epochs, budget_seconds=seconds, progress=progress, **settings)

    def proposal(v: VAE) -> Proposal:
        return lambda x: mcem_proposal(v, x).guide

    if budget.epochs is None and budget.samples is None:  # seconds only: fit_mcem stops itself
        points = []
        for f in fractions:
            vae, res = train_for(_BIG_EPOCHS, f * budget.seconds)
            points.append(_snapshot("mcem", vae, proposal, res, epochs=len(res.history), elbo_defined=False,
                                    fraction=f, notes="", copy_vae=False))
        return _with_final(points)
    epochs, note = _plan_epochs(budget, lambda: train_for(1)[1], None)
    if budget.seconds is not None:  # several limits: the epoch count, and fit_mcem's own clock
        def train_for_capped(e: int) -> tuple[VAE, Any]:
            return train_for(e, budget.seconds * e / epochs)
        return _prefix_runs("mcem", fractions, epochs, train_for_capped, proposal, False, note)
    return _prefix_runs("mcem", fractions, epochs, train_for, proposal, False, note)


# -- mcmc: fully Bayesian NUTS for small linear-Gaussian models -----------------------------------------
def _require_small_ppca(vae: VAE, n: int) -> float:
    """sigma of a pPCA-shaped VAE with n * d <= MCMC_MAX_LATENTS; UnsupportedModelError otherwise."""
    from torch import nn

    from pyro_vae.likelihoods import Gaussian

    lik = vae.likelihood
    why = None
    if not isinstance(vae.decoder, nn.Linear) or vae.decoder.bias is None:
        why = "its decoder is not the 'linear' network with a bias"
    elif not isinstance(lik, Gaussian) or lik.learn is not None:
        why = "its likelihood is not 'gaussian' with a fixed sigma"
    else:
        with torch.no_grad():
            p = vae.prior()
            try:
                standard = torch.allclose(p.mean, torch.zeros_like(p.mean)) and torch.allclose(p.variance, torch.ones_like(p.variance))
            except NotImplementedError:
                standard = False
        if not standard or any(True for _ in vae.prior.parameters()):
            why = "its prior is not the fixed standard normal"
    if why is not None:
        raise UnsupportedModelError(
            f"method 'mcmc' (fully Bayesian NUTS over theta and z) has a Bayesian version only of the linear-Gaussian "
            f"model (pPCA), and this model does not fit: {why}. For a VAE use 'mcem' (HMC on z, EM on theta) or an SVI method"
        )
    if n * vae.latent_dim > MCMC_MAX_LATENTS:
        raise UnsupportedModelError(
            f"method 'mcmc' samples every z_i with theta: N d = {n} x {vae.latent_dim} = {n * vae.latent_dim} latent "
            f"coordinates is above {MCMC_MAX_LATENTS}, too slow for NUTS here; use fewer training rows, or 'mcem'"
        )
    return float(lik.sigma)


@METHODS.register("mcmc")
def _run_mcmc(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
              options: dict[str, Any], progress: bool) -> MethodResult:
    """Fully Bayesian NUTS over (W, mu, z) of a small pPCA model (inference.mcmc.fit_bayesian)"""
    from inference import mcmc

    vae = _new_vae(spec, data)
    x = data.train
    n = int(x.shape[0])
    sigma = _require_small_ppca(vae, n)
    _check_options("mcmc", mcmc.bayesian_linear_gaussian_model, options, ("x", "latent_dim", "sigma"))
    kwargs = {"latent_dim": vae.latent_dim, "sigma": sigma, **options}

    def run(transitions: int) -> mcmc.BayesianPosterior:
        warmup = transitions // 2
        return mcmc.fit_bayesian(mcmc.bayesian_linear_gaussian_model, x, model_kwargs=kwargs,
                                 num_samples=max(1, transitions - warmup), warmup=warmup, num_chains=1,
                                 seed=spec.train.seed, progress=progress)

    transitions, note = budget.epochs or 0, ""
    if budget.samples is not None or budget.seconds is not None:
        probe = run(20)
        per_transition = probe.wall_time / 20
        evals_per = max(1, probe.num_gradient_evals // 20) * n
        limits = [budget.epochs] if budget.epochs is not None else []
        if budget.seconds is not None:
            limits.append(max(4, int(budget.seconds / per_transition)))
        if budget.samples is not None:
            limits.append(max(4, math.ceil(budget.samples / evals_per)))
        transitions, note = min(limits), f"probe: {per_transition:.3g} s/transition"
    transitions = max(4, transitions)
    post = run(transitions)
    W = post.samples["W"].reshape(-1, *post.samples["W"].shape[2:]).double()
    mu = post.samples["mu"].reshape(-1, post.samples["mu"].shape[-1]).double().mean(0)
    evals, evecs = torch.linalg.eigh((W @ W.transpose(-1, -2)).mean(0))
    d = vae.latent_dim
    W_hat = evecs[:, -d:].flip(1) * evals[-d:].flip(0).clamp_min(0).sqrt()
    with torch.no_grad():
        vae.decoder.weight.copy_(W_hat.to(vae.decoder.weight.dtype))
        vae.decoder.bias.copy_(mu.to(vae.decoder.bias.dtype))
    seed = spec.train.seed

    def proposal(v: VAE) -> Proposal:
        return lambda rows: mcmc.sample_latents(
            v, rows, num_samples=MCMC_PROPOSAL_DRAWS, warmup=MCMC_PROPOSAL_DRAWS, num_chains=1, seed=seed, progress=False,
        ).gaussian_proposal()

    record = _MCMCRecord(transitions, post.wall_time, post.num_gradient_evals * n, post.num_divergences)
    fit_like = _FitLike((record,), post.wall_time, post.num_gradient_evals * n)
    final = _snapshot("mcmc", vae, proposal, fit_like, epochs=transitions, elbo_defined=False, fraction=1.0,
                      notes="; ".join(s for s in ("1 chain", note) if s), copy_vae=False)
    return _with_final([final])


@dataclass(frozen=True)
class _MCMCRecord:
    """The mcmc method's one history record: NUTS transitions (warm-up + draws), seconds, samples, divergences."""

    transitions: int
    seconds: float
    samples_evaluated: int
    divergences: int


@dataclass(frozen=True)
class _FitLike:
    history: tuple[Any, ...]
    wall_time: float
    samples_evaluated: int


__all__ = [
    "Budget", "MethodResult", "METHODS", "fit", "score", "test_elbo", "proposal_for", "method_names",
    "check_methods", "IW_PARTICLES", "MCMC_MAX_LATENTS",
]
