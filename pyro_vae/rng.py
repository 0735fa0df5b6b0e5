"""Seeded blocks: random draws fixed by a seed without touching the caller's random state.

:func:`seeded` runs a block under the seeds of ``pyro.set_rng_seed(seed)`` (torch, Python's ``random``,
NumPy) and afterwards puts each of those generators back where the caller left it. Every function of
both packages that takes a ``seed`` draws inside it, but two that own the global streams by design and
reseed them: the training loop and ``fit_local``.

A block nested in another block of the same seed starts the same stream again, and the outer block
then redraws the inner one's numbers: give nested work its own seed (e.g. ``seed + 1``).
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
    cuda = torch.cuda.is_initialized()  # an uninitialized CUDA has no state to fork; a block that starts CUDA
    # draws there from CUDA's own default seed
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
