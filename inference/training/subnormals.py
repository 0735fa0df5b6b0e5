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
steps those changes still move a fit off the unflushed one's path (a seed fixes either).

The flags belong to a thread. A thread starts with its creator's flags, but PyTorch's intra-op
threads (an OpenMP team, which MKL's matmuls share) are made once and then reused, so flags set
later on the training thread would not reach them: with ``torch.get_num_threads() > 1`` the share
of an operation computed there would still meet subnormals. So the block also sets the flags on
every thread of that team, by running one OpenMP parallel region (``GOMP_parallel``, which GNU
libgomp exports and LLVM's and Intel's runtimes export for compatibility) on the OpenMP runtime
this process has loaded; with no such runtime found (no OpenMP, or not Linux) it covers the
training thread alone and says so in the log.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
from typing import Iterator

import torch

logger = logging.getLogger(__name__)
_TEAM_CALL = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # void fn(void *data): the body of an OpenMP parallel region
_RUNTIMES = ("libgomp", "libomp", "libiomp5")  # OpenMP runtimes that export GOMP_parallel


def flushing_now() -> bool:
    """Whether this thread flushes subnormal floats to zero now (a one-element product: no other thread takes part).

    PyTorch has no getter for the mode, so compute one: 1e-30 * 1e-10 = 1e-40 is subnormal in
    float32 and comes out as 0 exactly when the flags are set.
    """
    product = torch.tensor([1e-30], dtype=torch.float32) * torch.tensor([1e-10], dtype=torch.float32)
    return float(product) == 0.0


@functools.lru_cache(maxsize=1)
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime loaded in this process (read from /proc/self/maps) with ``GOMP_parallel``, or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if line.rstrip().endswith((".so", ".so.1", ".so.5"))}
    except OSError:  # not Linux
        return None
    for path in sorted(paths):
        if os.path.basename(path).startswith(_RUNTIMES):
            lib = ctypes.CDLL(path)  # the instance already loaded: dlopen returns its handle
            if hasattr(lib, "GOMP_parallel"):
                lib.GOMP_parallel.argtypes = [_TEAM_CALL, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                lib.GOMP_parallel.restype = None
                return lib
    return None


def _set_on_team(mode: bool) -> bool:
    """Set the flags to ``mode`` on every thread of this thread's OpenMP team (module docstring); whether it could."""
    runtime = _openmp_runtime()
    if runtime is None:
        return False
    body = _TEAM_CALL(lambda _: torch.set_flush_denormal(mode))
    runtime.GOMP_parallel(body, None, 0, 0)  # 0 threads: the team size PyTorch set (omp_set_num_threads)
    return True


@contextlib.contextmanager
def flushing_subnormals(enabled: bool = True) -> Iterator[bool]:
    """Flush subnormal floats to zero on this thread and its intra-op threads for the block (module docstring);
    yields whether they are.

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
    team = torch.get_num_threads() > 1  # one thread: it is the whole team
    if team and not _set_on_team(True):
        team = False
        logger.info("subnormals are flushed on the training thread only: no OpenMP runtime found for the other "
                    "%d intra-op threads", torch.get_num_threads() - 1)
    try:
        yield True
    finally:
        if team:
            _set_on_team(False)
        torch.set_flush_denormal(False)


__all__ = ["flushing_subnormals", "flushing_now"]
