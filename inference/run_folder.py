"""A run folder's safety: one process at a time, no silent overwrite, and a resume checked before anything is written.

* :func:`locked` holds an OS lock (``fcntl.flock`` on ``RUN_DIR/.lock``) for the life of a
  run, so a second ``train`` (or ``evaluate``) into the same folder is refused with a message
  naming the holder. The kernel releases the lock when its process dies, so a lock file left
  by a crashed run is stale by construction: the next run takes it over and says so.
* :func:`check_fresh` refuses a folder that already holds a run unless the caller asks to
  replace it (``overwrite``); :func:`clear_run` then removes the old run's files.
* :func:`check_resume_spec` refuses a resume whose spec differs from the saved ``config.yaml``
  in anything but the settings that only extend a run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

from inference.training.resume import changed_settings
from inference.training.settings import RESUMABLE_CHANGES
from pyro_vae.errors import ConfigError
from pyro_vae.spec import RunSpec, load_spec, spec_to_dict

try:  # POSIX; elsewhere runs are not locked (and a warning says so)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)

LOCK = ".lock"
RUN_FILES = ("config.yaml", "metrics.json", "report.md", "checkpoints", "figures", "samples", "diagnostics", "tensorboard")


@contextlib.contextmanager
def locked(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's lock for the block (the folder is created); ConfigError if another process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    with open(path, "a+", encoding="utf-8") as fh:
        if fcntl is None:  # pragma: no cover - Windows
            logger.warning("file locks are not available here: nothing stops two runs writing into %s", run_dir)
        else:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise ConfigError(
                    f"run folder {str(run_dir)!r} is in use by {holder}; wait for that run to finish, "
                    "or choose another --out"
                ) from None
        fh.seek(0)
        stale = fh.read().strip()
        if stale:
            logger.info("taking over the stale lock of %s (that process is gone) in %s", stale, run_dir)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        try:
            yield path
        finally:
            fh.seek(0)
            fh.truncate()  # an empty lock file: nobody holds it


def existing_run(run_dir: str | os.PathLike) -> list[str]:
    """The files of a run already in ``run_dir`` (config, metrics, report, checkpoints, figures, ...)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def check_fresh(run_dir: str | os.PathLike, *, overwrite: bool) -> None:
    """ConfigError when ``run_dir`` holds a run and ``overwrite`` is not set."""
    found = existing_run(run_dir)
    if found and not overwrite:
        raise ConfigError(
            f"{str(run_dir)!r} already holds a run ({', '.join(found)}); pass --resume to continue it, "
            "--overwrite (overwrite=True) to replace it, or choose another --out"
        )


def clear_run(run_dir: str | os.PathLike) -> None:
    """Remove the files of an earlier run from ``run_dir`` (call under :func:`locked`)."""
    run_dir = Path(run_dir)
    for name in existing_run(run_dir):
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    logger.info("removed the earlier run in %s (overwrite)", run_dir)


def check_resume_spec(run_dir: str | os.PathLike, spec: RunSpec) -> None:
    """ConfigError unless ``run_dir`` holds a run whose saved spec equals ``spec`` up to RESUMABLE_CHANGES."""
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"cannot resume: {saved_path} does not exist; start the run without --resume")
    saved, now = spec_to_dict(load_spec(saved_path)), spec_to_dict(spec)
    changed = [line for section in ("model", "data", "train") for line in changed_settings(
        saved[section], now[section], resumable=RESUMABLE_CHANGES if section == "train" else (), prefix=f"{section}.")]
    if changed:
        raise ConfigError(
            f"cannot resume {str(saved_path.parent)!r} with a different spec ({'; '.join(changed)}); only "
            f"train.{', train.'.join(RESUMABLE_CHANGES)} may change. Resume with the saved config.yaml, or start "
            "a new run folder"
        )


__all__ = ["locked", "existing_run", "check_fresh", "clear_run", "check_resume_spec", "LOCK", "RUN_FILES"]
