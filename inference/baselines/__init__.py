"""Baselines on the same program: MAP/MLE codes, non-amortized and semi-amortized local VI, Monte Carlo EM.

Each fits theta (the prior, likelihood and decoder) with per-datapoint parameters on the one
training loop, and is scored like every method by :mod:`inference.evaluate`.
"""

from inference.baselines.chains import Chains, EStep, chain_proposal, e_step, initial_chains, sample_chains, search_step_size
from inference.baselines.exact_em import EMResult, exact_em
from inference.baselines.local_guides import LocalGaussianGuide, PointGuide, RowTable, initial_codes, initial_guide
from inference.baselines.local_family import LocalFamilyGuide, encoder_family_guide
from inference.baselines.local_vi import LocalFit, final_elbo, fit_local, fit_local_vi
from inference.baselines.map import encode_map, fit_map, map_objective, map_proposal
from inference.baselines.mcem import fit_mcem, mcem_proposal
from inference.baselines.refine import RefinedLogLikelihood, refine_encoder, refined_log_likelihood
from inference.baselines.theta import check_continuous_latents, frozen, theta_parameters, theta_penalty

__all__ = [
    "Chains", "EStep", "chain_proposal", "e_step", "initial_chains", "sample_chains", "search_step_size", "EMResult",
    "exact_em", "LocalGaussianGuide", "PointGuide", "RowTable", "initial_codes", "initial_guide", "LocalFit",
    "final_elbo", "fit_local", "fit_local_vi", "encode_map", "fit_map", "map_objective", "map_proposal", "fit_mcem",
    "mcem_proposal", "check_continuous_latents", "frozen", "theta_parameters", "theta_penalty",
    "LocalFamilyGuide", "encoder_family_guide", "RefinedLogLikelihood", "refine_encoder", "refined_log_likelihood",
]
