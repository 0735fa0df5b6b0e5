"""Seeded blocks: random draws fixed by a seed without touching the caller's random state.

Every function of this package and of ``inference`` that takes a ``seed`` draws inside
:func:`seeded`: the block runs under ``pyro.set_rng_seed(seed)`` (torch on every device, Python's
``random``, NumPy), and afterwards each of those generators is where the caller left it. A seed
therefore fixes a result, and calling a seeded function never changes what the caller draws next.
The training loop is the one exception by design: a fit owns its run's random streams
(:mod:`inference.training.loop`).
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block with torch, Python's ``random`` and NumPy seeded by ``seed`` (as ``pyro.set_rng_seed``), then restore torch's (CPU and CUDA), Python's and NumPy's
    generators to their state before the block. ``None``: the block draws from the caller's streams, as they are.
    """
    if seed is None:
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_initialized()  # an uninitialized CUDA has no state to fork, and is left uninitialized
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        try:
            torch.default_generator.manual_seed(seed)  # what pyro.set_rng_seed seeds, CUDA only where it is in use
            if cuda:
                torch.cuda.manual_seed_all(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


__all__ = ["seeded"]
