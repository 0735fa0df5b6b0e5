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
    """Run a block with torch (CPU and CUDA), Python's ``random`` and NumPy seeded by ``seed`` (as
    ``pyro.set_rng_seed``), then restore each generator to its state before the block; a CUDA that the block
    starts is left as if started from the caller's seed. ``None``: the block draws from the caller's
    streams, as they are.
    """
    if seed is None:
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_initialized()
    # CUDA that has not started has no state to fork: its seed is queued (torch seeds CUDA when it starts),
    # so a block that starts it draws from ``seed``, and on exit the caller's seed (torch.initial_seed(),
    # the seed torch.manual_seed gave both) is queued, or applied if the block started CUDA, again
    lazy_cuda = not cuda and torch.cuda.is_available()
    caller_seed = torch.initial_seed() if lazy_cuda else None
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        try:
            torch.default_generator.manual_seed(seed)  # what pyro.set_rng_seed seeds
            if cuda or lazy_cuda:
                torch.cuda.manual_seed_all(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            if lazy_cuda:
                torch.cuda.manual_seed_all(caller_seed)


__all__ = ["seeded"]
