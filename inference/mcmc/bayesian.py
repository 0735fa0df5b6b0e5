r"""Fully Bayesian NUTS for small models: theta and z sampled together.

For a Pyro model with continuous latent sites, here parameters theta and per-datapoint codes
z_i, the target is the joint posterior::

    p(theta, z | x) proportional to p(theta) prod_i p(z_i) p(x_i | theta, z_i)

sampled by NUTS/HMC (:func:`inference.mcmc.runner.run_chains`) in unconstrained coordinates
(Pyro's ``biject_to`` transforms and their log-Jacobians). Besides the draws, PSIS-LOO needs the
per-datapoint log-likelihood of every draw s::

    log p(x_i | theta^(s), z_i^(s)) = sum over observed sites of datapoint i of log p(site value)

(:func:`pointwise_log_likelihood`). :func:`bayesian_linear_gaussian_model` is the small model
these tools are exercised on: Bayesian probabilistic PCA.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.mcmc.util import initialize_model

from inference.mcmc.runner import ChainCounts, check_continuous, check_settings, run_chains
from pyro_vae.errors import UnsupportedModelError
from pyro_vae.rng import seeded

logger = logging.getLogger(__name__)

Tensor = torch.Tensor


@dataclass(frozen=True)
class BayesianPosterior(ChainCounts):
    """Draws of every latent site of a small Bayesian model, from :func:`fit_bayesian`.

    ``samples[name]`` has shape (chains, draws, *site shape) (constrained space);
    ``log_likelihood`` has shape (chains, draws, N): log p(x_i | theta^(s), z_i^(s)) summed over
    the observed sites of datapoint i (the input of PSIS-LOO). ``sample_stats`` as in
    :class:`inference.mcmc.latents.LatentPosterior`.
    """

    samples: dict[str, Tensor]
    sample_stats: dict[str, np.ndarray]
    log_likelihood: Tensor
    wall_time: float
    num_gradient_evals: int
    kernel: str
    x: Tensor
    warmup: int

    def _draw_shape(self) -> tuple[int, int]:
        return tuple(self.log_likelihood.shape[:2])


def bayesian_linear_gaussian_model(x: Tensor, latent_dim: int, sigma: float, w_scale: float = 1.0) -> None:
    r"""Bayesian probabilistic PCA, a Pyro model with priors on theta = (W, mu)::

        W_jk ~ N(0, w_scale^2),  mu_j ~ N(0, 10^2)            sites "W" (D, d), "mu" (D,)
        z_i  ~ N(0, I_d)                                      site "z" (N, d), plate "data"
        x_i  ~ N(W z_i + mu, sigma^2 I_D)                     site "x" (observed)

    The posterior is invariant under z -> R^T z, W -> W R for any orthogonal R (rotations, sign
    flips): W and z are not identified and their R-hat is not meaningful, whereas W W^T, mu and
    the per-datapoint log-likelihood are identified.
    """
    N, D = x.shape
    W = pyro.sample("W", dist.Normal(x.new_zeros(D, latent_dim), w_scale).to_event(2))
    mu = pyro.sample("mu", dist.Normal(x.new_zeros(D), 10.0).to_event(1))
    with pyro.plate("data", N, dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(latent_dim), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + mu, sigma).to_event(1), obs=x)


def _per_datapoint(site: dict, plate: str, N: int) -> Tensor:
    """log p of an observed site reduced to one value per datapoint of ``plate``: shape (N,)."""
    lp = scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])
    frame = next((f for f in site["cond_indep_stack"] if f.name == plate), None)
    if frame is None:
        raise UnsupportedModelError(
            f"observed site {site['name']!r} is not inside the plate {plate!r}; per-datapoint log-likelihoods "
            f"need every observation in the data plate (or pass data_plate=<its name>)"
        )
    lp = torch.as_tensor(lp)
    lp = lp.reshape((1,) * max(0, -frame.dim - lp.dim()) + tuple(lp.shape))
    lp = lp.movedim(frame.dim, 0)
    return lp.expand(N, *lp.shape[1:]).reshape(N, -1).sum(-1)


def pointwise_log_likelihood(
    model_fn: Callable, x: Tensor, samples: Mapping[str, Tensor], *, data_plate: str = "data", **model_kwargs: Any
) -> Tensor:
    r"""log p(x_i | theta^(s), z_i^(s)) for each draw s and datapoint i.

    The model is replayed with each draw's latent values (``poutine.condition``) and the
    log-densities of its observed sites are summed per datapoint::

        ll[c, s, i] = sum_{observed sites o} sum_{elements of o in datapoint i} log p(o | theta^(c,s), z_i^(c,s))

    Parameters
    ----------
    model_fn : Callable
        The Pyro model, called as ``model_fn(x, **model_kwargs)``.
    x : Tensor
        The N datapoints.
    samples : Mapping[str, Tensor]
        Latent site name -> draws of shape (chains, draws, *site shape).
    data_plate : str
        The plate whose dimension indexes the datapoints; every observed site must be inside it.

    Returns
    -------
    Tensor
        Shape (chains, draws, N).
    """
    names = list(samples)
    C, S = samples[names[0]].shape[:2]
    N = x.shape[0]
    out = x.new_zeros(C, S, N)
    with torch.no_grad():
        for c in range(C):
            for s in range(S):
                cond = poutine.condition(model_fn, data={k: samples[k][c, s] for k in names})
                trace = poutine.trace(cond).get_trace(x, **model_kwargs)
                observed = [
                    site for site in trace.nodes.values()
                    if site["type"] == "sample" and site["is_observed"] and site["name"] not in samples
                ]
                if not observed:
                    raise UnsupportedModelError("the model has no observed site; a log-likelihood needs obs=...")
                for site in observed:
                    out[c, s] += _per_datapoint(site, data_plate, N).to(out.dtype)
    return out


def fit_bayesian(
    model_fn: Callable,
    x: Tensor,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    num_samples: int = 500,
    warmup: int = 500,
    num_chains: int = 2,
    kernel: str = "nuts",
    step_size: float = 1.0,
    max_tree_depth: int = 10,
    num_steps: int = 10,
    target_accept: float = 0.8,
    full_mass: bool = False,
    seed: int = 0,
    data_plate: str = "data",
    progress: bool = True,
) -> BayesianPosterior:
    r"""NUTS (or HMC) over every latent site of ``model_fn(x, **model_kwargs)``: theta and z jointly.

    Target p(theta, z | x) proportional to p(theta) prod_i p(z_i) p(x_i | theta, z_i), sampled in
    unconstrained coordinates (Pyro's ``biject_to`` transforms and Jacobians, potential from
    ``pyro.infer.mcmc.util.initialize_model``). Each chain starts from its own
    ``init_to_uniform`` point (uniform in (-2, 2) in unconstrained space). Also returns the
    per-datapoint log-likelihood draws (:func:`pointwise_log_likelihood`). Meant for SMALL
    models (tens of datapoints, a few parameters): the cost grows with N and the number of
    parameters, and every gradient traces the whole model.
    """
    check_settings(kernel, num_samples, warmup, num_chains, step_size=step_size, target_accept=target_accept,
                   max_tree_depth=max_tree_depth, num_steps=num_steps)
    model_kwargs = dict(model_kwargs or {})
    x = x.detach()
    with seeded(seed):
        check_continuous(model_fn, x, **model_kwargs)
        init, potential, transforms, _ = initialize_model(
            model_fn, model_args=(x,), model_kwargs=model_kwargs, num_chains=num_chains
        )
        inits = [init] if num_chains == 1 else [{k: v[c] for k, v in init.items()} for c in range(num_chains)]
        samples, stats, wall, evals = run_chains(
            potential, inits, transforms, kernel=kernel, num_samples=num_samples, warmup=warmup,
            step_size=step_size, max_tree_depth=max_tree_depth, num_steps=num_steps,
            target_accept=target_accept, full_mass=full_mass, progress=progress,
        )
    log_lik = pointwise_log_likelihood(model_fn, x, samples, data_plate=data_plate, **model_kwargs)
    result = BayesianPosterior(samples, stats, log_lik, wall, evals, kernel, x, warmup)
    logger.info(
        "%s over %s: %d chains x (%d warm-up + %d draws) in %.1f s, %d gradient evaluations, %d divergences",
        kernel.upper(), sorted(samples), num_chains, warmup, num_samples, wall, evals, result.num_divergences,
    )
    return result


__all__ = ["BayesianPosterior", "bayesian_linear_gaussian_model", "pointwise_log_likelihood", "fit_bayesian"]
