"""Subnormal floats flushed to zero on the CPU while a fit runs.

A float32 of magnitude below 2^-126 ~ 1.2e-38 is subnormal, and x86 CPUs take tens of times
longer for an operation on one than on a normal float. Training makes them where a weight is
e^-88 or less: under enumeration M2's unlabelled term is sum_y q(y | x) (-L(x, y)) + H(q(y | x)),
so every class's branch (encoder and decoder, forward and backward) is weighted by q(y | x), and
once the classifier is sure of a row its other classes' weights fall below 1.2e-38. From there on
the backward matmuls of those branches run on subnormal operands; the steps slow down as the
classifier grows confident, and a fresh fit starts fast again.

:func:`flushing_subnormals` sets the CPU's flush-to-zero and denormals-are-zero flags
(``torch.set_flush_denormal``) for the block and puts back the mode it found. It changes an
operation's result only where an operand or the result is below 1.2e-38; over thousands of
steps those changes still move a fit off the unflushed one's path (a seed fixes either). The
flags belong to a thread: they cover the thread that runs the fit and its CPU autograd, not
PyTorch's other intra-op threads, so with ``torch.get_num_threads() > 1`` the share of a matmul
computed on those threads still meets subnormals.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def flushing_now() -> bool:
    """Whether this thread flushes subnormal floats to zero now.

    PyTorch has no getter for the mode, so compute one: 1e-30 * 1e-10 = 1e-40 is subnormal in
    float32 and comes out as 0 exactly when the flags are set.
    """
    product = torch.tensor([1e-30], dtype=torch.float32) * torch.tensor([1e-10], dtype=torch.float32)
    return float(product) == 0.0


@contextlib.contextmanager
def flushing_subnormals(enabled: bool = True) -> Iterator[bool]:
    """Flush subnormal floats to zero on this thread for the block (module docstring); yields whether they are.

    ``enabled=False`` or a CPU without the flags leaves the mode as it is. On exit the mode found
    on entry is restored.
    """
    before = flushing_now()
    if not enabled or before:
        yield before
        return
    if not torch.set_flush_denormal(True):  # no SSE3 flags (or no x86/ARM support): nothing to set
        yield False
        return
    try:
        yield True
    finally:
        torch.set_flush_denormal(False)


__all__ = ["flushing_subnormals", "flushing_now"]
