r"""What an importance-sampled evaluation will cost, measured before it starts.

The yardstick's work is linear in the rows: N rows x K particles, in chunks of ``batch_size``
rows (:func:`inference.evaluate.log_likelihood`). After a one-row warm-up, a pilot scores the first n rows (one or more
full chunks, same K, same chunking) and extrapolates::

    seconds(N) ~= seconds(pilot) x N / n.

The estimate holds while the machine's load stays as during the pilot: on a shared machine it is
a lower bound.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import torch

from inference.evaluate import log_likelihood
from pyro_vae.checks import positive_int


class CostEstimate(NamedTuple):
    """Pilot rows and seconds, and the extrapolated seconds for all ``rows``."""

    pilot_rows: int
    pilot_seconds: float
    rows: int
    num_samples: int
    seconds: float

    def summary(self) -> str:
        return (f"estimated IS evaluation: {self.rows} rows x K={self.num_samples} ~ {self.seconds / 60:.1f} min "
                f"(pilot: {self.pilot_rows} rows in {self.pilot_seconds:.1f} s, extrapolated linearly in rows)")


def estimate_log_likelihood_cost(model: Callable, guide: Callable, x: torch.Tensor, *, num_samples: int,
                                 batch_size: int = 100, pilot_rows: int | None = None, **kwargs: Any) -> CostEstimate:
    """Time :func:`inference.evaluate.log_likelihood` on the first ``pilot_rows`` rows (default: one chunk,
    ``batch_size``) and extrapolate to all rows of x (module docstring). The global RNG is left as it was."""
    positive_int("num_samples", num_samples)
    positive_int("batch_size", batch_size)
    n = min(x.shape[0], batch_size if pilot_rows is None else positive_int("pilot_rows", pilot_rows))
    with torch.random.fork_rng(devices=[]):
        # warm-up (first-call costs: allocations, Pyro's validation), then the timed pilot
        log_likelihood(model, guide, x[:1], num_samples=min(num_samples, 8), progress=False, **kwargs)
        t0 = time.perf_counter()
        log_likelihood(model, guide, x[:n], num_samples=num_samples, batch_size=batch_size, progress=False, **kwargs)
        seconds = time.perf_counter() - t0
    return CostEstimate(n, seconds, x.shape[0], num_samples, seconds * x.shape[0] / n)


__all__ = ["CostEstimate", "estimate_log_likelihood_cost"]
