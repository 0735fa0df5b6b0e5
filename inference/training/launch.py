"""``pyro-vae train --nproc N``: launch the same command under torchrun on this machine, and say clearly when it fails.

The command runs as ``python -m torch.distributed.run --standalone --nproc_per_node N -m
inference.cli train ...`` (exactly what a user would type with ``torchrun``); each process
gets ``OMP_NUM_THREADS=1`` unless the environment sets it (N processes share the cores).
When a process fails, torchrun stops the others; :func:`launch` then raises TrainingError
naming the exit status and the last complete checkpoint, which is left intact, to resume from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from pyro_vae.errors import ConfigError, TrainingError


def torchrun_command(nproc: int, target: Sequence[str]) -> list[str]:
    """The torchrun command line that runs ``target`` (``["-m", module, ...]`` or ``[script, ...]``) on ``nproc`` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target]


def failure_message(nproc: int, status: int, run_dir: str | os.PathLike | None) -> str:
    """The one line said when a torchrun job of ``nproc`` processes ended with exit ``status``."""
    where = ""
    if run_dir is not None:
        last = Path(run_dir) / "checkpoints" / "last.pt"
        if last.is_file():
            from inference.training.checkpoint import load_checkpoint

            try:
                epoch = load_checkpoint(last)["epoch"]
                where = (f"; the last complete checkpoint {str(last)!r} (epoch {epoch}) is intact: continue with "
                         "--resume (resume=True)")
            except (TrainingError, ConfigError):
                where = f"; {str(last)!r} could not be read"
        else:
            where = "; no checkpoint had been written yet"
    return (f"training on {nproc} processes stopped: a process failed (torchrun exit status {status}; the failing "
            f"process's error is printed above){where}")


def launch(nproc: int, target: Sequence[str], *, run_dir: str | os.PathLike | None = None,
           env: dict[str, str] | None = None) -> None:
    """Run ``target`` on ``nproc`` local processes under torchrun; TrainingError (:func:`failure_message`) if it fails."""
    environment = {**os.environ, **(env or {})}
    environment.setdefault("OMP_NUM_THREADS", "1")
    status = subprocess.run(torchrun_command(nproc, target), env=environment).returncode
    if status != 0:
        raise TrainingError(failure_message(nproc, status, run_dir))


def without_flag(argv: Sequence[str], flag: str) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE`` (the launcher's own option, not passed to the processes)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


__all__ = ["torchrun_command", "failure_message", "launch", "without_flag"]
