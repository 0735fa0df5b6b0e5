r"""The enumerated ELBO (Pyro's ``TraceEnum_ELBO``) and the classification term of semi-supervised M2.

``"enum"``: every discrete latent site of the guide is marked for parallel enumeration
(``config_enumerate(guide, "parallel")``) and summed out exactly instead of sampled; for M2's
unlabelled rows (:mod:`pyro_vae.m2`) this is

    -U(x) = sum_y q(y | x) E_{q(z|x,y)}[log p(x, y, z) - log q(z | x, y)] + H(q(y | x)),

one z draw per enumerated class, all C classes in one vectorized pass (``max_plate_nesting=1``:
the data plate at dim -1, the enumerated y at dim -2, particles further left). Without a
discrete site (labelled rows: y observed) it is estimator A. Minibatches are scaled by N / B
like every objective.

:class:`ClassificationLoss` is the auxiliary term of Kingma et al. (2014), a plain loss

    l_class = -w s sum_{labelled i in the batch} log q(y_i | x_i),      s = N_l / B_l,

an unbiased estimate of -w sum_{all labelled i} log q(y_i | x_i); M2 takes w = alpha / N_l, which
makes it -alpha E_labelled[log q(y | x)], the paper's term. The term is
read from the guide's site ``y`` with the label observed (``poutine.condition``), so it needs
only the guide, not the program's internals.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from pyro import poutine
from pyro.infer import ELBO, TraceEnum_ELBO, config_enumerate

from inference.objectives.registry import OBJECTIVES
from pyro_vae.checks import number, positive_int

MAX_PLATE_NESTING = 1  # the data plate; enumerated dims and the particle plate sit to its left


class EnumeratedELBO(TraceEnum_ELBO):
    """Pyro's ``TraceEnum_ELBO`` that enumerates the guide's discrete sites itself (``config_enumerate(guide, "parallel")``)."""

    def __init__(self, num_particles: int = 1) -> None:
        positive_int("num_particles", num_particles)
        super().__init__(num_particles=num_particles, vectorize_particles=num_particles > 1,
                         max_plate_nesting=MAX_PLATE_NESTING)

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """-ELBO with the guide's discrete sites summed out (module docstring); a plain tensor under no_grad."""
        with warnings.catch_warnings():  # a labelled batch has nothing to enumerate: that is estimator A, not a mistake
            warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured for enumeration")
            if not torch.is_grad_enabled():  # Pyro's differentiable_loss refuses a value without gradients
                return torch.tensor(super().loss(model, config_enumerate(guide, "parallel"), *args, **kwargs))
            return super().differentiable_loss(model, config_enumerate(guide, "parallel"), *args, **kwargs)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The value of :meth:`differentiable_loss` (no gradients)."""
        return super().loss(model, config_enumerate(guide, "parallel"), *args, **kwargs)

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The value, with gradients of the enumerated ELBO accumulated (``pyro.infer.SVI``'s call)."""
        return super().loss_and_grads(model, config_enumerate(guide, "parallel"), *args, **kwargs)


@OBJECTIVES.register("enum")
def enum_objective(num_particles: int = 1) -> ELBO:
    """The ELBO with discrete latents summed out exactly (Pyro's TraceEnum_ELBO, parallel enumeration)."""
    return EnumeratedELBO(num_particles)


class ClassificationLoss:
    """-w s sum_i log q(y_i | x_i) from the guide's site ``site`` conditioned on the labels (module docstring)."""

    def __init__(self, weight: float, site: str = "y") -> None:
        self.weight = number("weight", weight, minimum=0)
        self.site = site

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, y: torch.Tensor,
                            **kwargs: Any) -> torch.Tensor:
        """-w (N_l / B_l) sum_i log q(y_i | x_i); ``model`` is unused (the term is the guide's alone)."""
        trace = poutine.trace(poutine.condition(guide, data={self.site: y})).get_trace(*args, **kwargs)
        site = trace.nodes[self.site]
        scale = next((float(f.full_size) / f.size for f in site["cond_indep_stack"]
                      if f.vectorized and f.dim == -1 and f.full_size is not None), 1.0)
        return -self.weight * scale * site["fn"].log_prob(site["value"]).sum()


__all__ = ["EnumeratedELBO", "enum_objective", "ClassificationLoss", "MAX_PLATE_NESTING"]
