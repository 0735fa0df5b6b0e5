r"""The ``mcmc`` method: fully Bayesian NUTS over (W, mu, z) of a SMALL linear-Gaussian model (pPCA).

It runs only for the pPCA model (prior ``normal``, ``linear`` decoder, ``gaussian`` likelihood
with fixed sigma) with at most :data:`MCMC_MAX_LATENTS` latent coordinates N d, and raises
UnsupportedModelError otherwise (use ``mcem`` -- MCMC on z, EM on theta -- for a VAE). Its theta
is the posterior mean of mu and the rank-d eigen-square-root of the posterior mean of W W^T
(W itself is identified only up to rotation); its proposal is a Gaussian fitted to NUTS draws of
z given theta (:func:`inference.mcmc.sample_latents`). Checkpoints: only the final state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from inference import mcmc
from inference.methods.budget import Budget
from inference.methods.registry import METHODS, check_options, require_cpu
from inference.methods.result import MethodResult, Proposal, snapshot, with_final
from inference.run import new_program
from inference.training import EpochRecord
from pyro_vae.data import DataSplits
from pyro_vae.errors import UnsupportedModelError
from pyro_vae.likelihoods import Gaussian
from pyro_vae.spec import RunSpec
from pyro_vae.vae import VAE

MCMC_MAX_LATENTS = 5000  # N * d above which fully Bayesian NUTS is refused
MCMC_PROPOSAL_DRAWS = 200  # NUTS warm-up and draws for the mcmc method's scoring proposal


def _require_small_ppca(vae: VAE, n: int) -> float:
    """sigma of a pPCA-shaped VAE with n * d <= MCMC_MAX_LATENTS; UnsupportedModelError otherwise."""
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
    require_cpu("mcmc", spec)
    vae = new_program(spec, data)
    x = data.train
    n = int(x.shape[0])
    sigma = _require_small_ppca(vae, n)
    check_options("mcmc", mcmc.bayesian_linear_gaussian_model, options, ("x", "latent_dim", "sigma"))
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

    samples = post.num_gradient_evals * n
    record = EpochRecord(transitions, math.nan, None, 1.0, post.wall_time,
                         stats={"transitions": float(transitions), "divergences": float(post.num_divergences)})
    final = snapshot("mcmc", vae, proposal, (record,), post.wall_time, samples, epochs=transitions, elbo_defined=False,
                     fraction=1.0, notes="; ".join(s for s in ("1 chain", note) if s), copy_vae=False)
    return with_final([final])


__all__ = ["MCMC_MAX_LATENTS"]
