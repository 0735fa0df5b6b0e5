"""Objectives: the losses the training loop minimizes, registered by name (``train.elbo``).

``trace`` and ``meanfield`` are Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` (SGVB
estimators A and B); ``iwae`` and ``rws`` are plain losses on the per-datapoint log-weights of
:mod:`inference.log_weights`; ``enum`` is Pyro's ``TraceEnum_ELBO`` with the guide's discrete sites
summed out (semi-supervised M2, with its classification term :class:`ClassificationLoss`).
"""

from inference.objectives.registry import OBJECTIVES, check_objective, make_objective, require_reparam
from inference.objectives.elbo import describe_kl, kl_mode, meanfield_objective, trace_objective
from inference.objectives.iwae import IWAE, ImportanceWeightedLoss, iwae_objective
from inference.objectives.enum import ClassificationLoss, EnumeratedELBO, enum_objective
from inference.objectives.rws import ReweightedWakeSleep, rws_objective

__all__ = [
    "OBJECTIVES", "make_objective", "check_objective", "require_reparam", "kl_mode", "describe_kl",
    "trace_objective", "meanfield_objective", "IWAE", "ImportanceWeightedLoss", "iwae_objective",
    "ReweightedWakeSleep", "rws_objective", "EnumeratedELBO", "enum_objective", "ClassificationLoss",
]
