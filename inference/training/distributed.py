r"""Data parallel training on ``torch.distributed``: one run, W processes, each on its shard of every batch.

Launch with torchrun (one machine, or several through its rendezvous)::

    torchrun --nproc_per_node 2 -m inference.cli train --dataset digits --out runs/ddp
    pyro-vae train --nproc 2 --dataset digits --out runs/ddp        # the same, launched for you
    # two machines, 4 processes each; run on both, HOST being the first machine's address:
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        --rdzv-id myrun -m inference.cli train --device cuda --out /shared/runs/big

:func:`init_from_env` joins the process group torchrun describes in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...): backend gloo on the CPU, NCCL on CUDA.

Gradients are averaged by one explicit all-reduce per step (:func:`averaged_step`), not by
``DistributedDataParallel``: Pyro calls a program's networks from inside its model and guide,
not through one ``forward``, which DDP's hooks need. Process r holds b_r of the global batch's
b rows (:mod:`pyro_vae.sources`), and its loss uses the data plate's scale N / b_r with the
global N, so each process's loss L_r is an unbiased estimate of the full-data objective. The
all-reduce sums b_r * grad L_r (and b_r * L_r, b_r, a non-finite flag) over the processes and
divides by b = sum_r b_r:

    grad = sum_r (b_r / b) grad L_r = grad [ (N / b) sum_{i in the global batch} loss_i ],

exactly the gradient of one process holding the whole global batch, for any split of the rows
(a process may even hold none). Validation sums are reduced the same way
(:func:`shard_rows`, :func:`reduce_sums`). Process 0 alone writes checkpoints, metrics,
figures and the report. Every process seeds Pyro's RNG streams from (seed, rank) (rank 0 with
the seed itself); checkpoints keep every process's streams, so a resumed run with the same
number of processes continues exactly.

A process that dies ends the job: torchrun stops the others (a collective waiting on a dead
peer fails), and the last checkpoint, written atomically after a complete epoch, stays intact.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import sys
from typing import Any, Callable, Mapping, NoReturn, Sequence

import torch
import torch.distributed as dist

from pyro_vae.errors import ConfigError

logger = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return world()[0] == 0


def launched() -> bool:
    """Whether torchrun started this process as one of several (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init_from_env(device: torch.device, *, timeout_s: float = 1800.0) -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); returns ``(rank, world_size)``.

    Does nothing when the environment describes a single process or the group exists already.
    """
    if not launched() or dist.is_initialized():
        return world()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("process %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return world()


def close(*, synchronize: bool = True) -> None:
    """Leave the process group (if this process is in one).

    ``synchronize``: wait at a barrier first, so that no process tears its connections down while
    another still talks to it (gloo aborts the process then: "terminate called without an active
    exception"); pass False on an error path, where another process may be gone already.
    """
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """End a process torchrun started: wait for the others (after success), then exit without the
    interpreter's teardown, whose destruction of gloo's communication threads can abort a process
    that has finished all its work ("terminate called without an active exception")."""
    if code == 0 and dist.is_available() and dist.is_initialized():
        dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check_shardable(label: str, shardable: bool, max_seconds: float | None) -> None:
    """ConfigError when a fit cannot run on several processes: per-datapoint state, or a time budget."""
    _, size = world()
    if size == 1:
        return
    if not shardable:
        raise ConfigError(f"{label} fits per-datapoint parameters (codes, local q_i or chains) held by one process; "
                          f"it cannot run on {size} processes: run it without torchrun / --nproc (nproc 1)")
    if max_seconds is not None:
        raise ConfigError(f"a time budget (max_seconds={max_seconds}) cannot stop {size} processes at the same step; "
                          "give an epoch budget, or run on one process")


def _device_of(tensors: Sequence[torch.Tensor]) -> torch.device:
    return tensors[0].device if tensors else torch.device("cpu")


def reduce_sums(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    """Each value summed over every process (one all-reduce; the values themselves with one process)."""
    if world()[1] == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device or _collective_device())
    dist.all_reduce(t)
    return t.tolist()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def shard_rows(n: int) -> slice:
    """The contiguous slice of ``n`` rows this process scores (validation, reports); all of them with one process."""
    rank, size = world()
    return slice(n * rank // size, n * (rank + 1) // size)


def _params(optimizers: Mapping[str, torch.optim.Optimizer]) -> list[torch.nn.Parameter]:
    seen, out = set(), []
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def averaged_step(loss: Callable[[Mapping[str, torch.Tensor], float], torch.Tensor], batch: Mapping[str, torch.Tensor],
                  beta: float, optimizers: Mapping[str, torch.optim.Optimizer]) -> tuple[float, int]:
    """One step of every optimizer on the gradient averaged over the processes (module docstring).

    Returns the global batch's loss (the same on every process; NaN when any process's loss was
    not finite, and then no optimizer steps) and the global batch's rows.
    """
    rows = int(batch["x"].shape[0])
    params = _params(optimizers)
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    value, bad = 0.0, 0.0
    if rows:
        value_t = loss(batch, beta)
        value = value_t.item()
        if math.isfinite(value):
            value_t.backward()
        else:
            bad = 1.0
    ref = params[0] if params else torch.zeros(())
    pieces = [torch.zeros(p.numel(), dtype=ref.dtype, device=ref.device) if p.grad is None or bad
              else p.grad.detach().reshape(-1).to(ref.dtype) * rows for p in params]
    tail = torch.tensor([0.0 if bad else value * rows, float(rows), bad], dtype=ref.dtype, device=ref.device)
    flat = torch.cat([*pieces, tail])
    dist.all_reduce(flat)
    total_loss, total_rows, any_bad = (float(v) for v in flat[-3:])
    if any_bad > 0 or total_rows == 0:
        return float("nan") if any_bad > 0 else 0.0, int(total_rows)
    offset = 0
    for p in params:
        grad = flat[offset:offset + p.numel()].view_as(p).to(p.dtype) / total_rows
        p.grad = grad.clone()
        offset += p.numel()
    for optimizer in optimizers.values():
        optimizer.step()
    return total_loss / total_rows, int(total_rows)


def synchronize() -> None:
    """Wait until every process has reached this point (nothing to wait for with one process)."""
    if world()[1] > 1:
        dist.barrier()


def gather_rng(capture: Callable[[], Any]) -> list[Any] | None:
    """Every process's ``capture()`` (their RNG states), in rank order; None with one process."""
    _, size = world()
    if size == 1:
        return None
    out: list[Any] = [None] * size
    dist.all_gather_object(out, capture())
    return out


__all__ = ["world", "is_main", "launched", "init_from_env", "close", "check_shardable", "reduce_sums", "shard_rows",
           "averaged_step", "gather_rng", "synchronize"]
