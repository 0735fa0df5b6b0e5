"""Inference methods behind one interface: ``fit(spec, data, method=..., budget=...)`` and the one yardstick ``score``.

Importing the package registers every method in :data:`METHODS` (SVI objectives, baselines, MCMC).
"""

from inference.methods.budget import Budget
from inference.methods.registry import (
    DEFAULT_CHECKPOINTS, METHODS, check_methods, fit, method_names, placed, proposal_for, score, test_elbo,
)
from inference.methods.result import MethodResult
from inference.methods import baseline_methods, mcmc_method, svi_methods  # noqa: E402,F401 - register the methods
from inference.methods.mcmc_method import MCMC_MAX_LATENTS
from inference.methods.svi_methods import IW_PARTICLES

__all__ = [
    "Budget", "MethodResult", "METHODS", "DEFAULT_CHECKPOINTS", "fit", "score", "test_elbo", "proposal_for",
    "method_names", "check_methods", "placed", "IW_PARTICLES", "MCMC_MAX_LATENTS",
]
