"""What may resume from a checkpoint: the same training settings (but those that only extend a run) on the same data.

The data are recorded by :func:`data_info`: name, split sizes, features, binarization, and a
SHA-256 fingerprint of the three splits' values, so that a resume on data of the same shape
but other contents is refused too (unless the caller allows it).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from inference.training.settings import RESUMABLE_CHANGES
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError
from pyro_vae.spec import TrainSpec, spec_to_dict

logger = logging.getLogger(__name__)


def fingerprint(data: DataSplits) -> str:
    """SHA-256 of the train, validation and test values (float32 bytes, in order), hex."""
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        digest.update(np.ascontiguousarray(split.detach().cpu().float().numpy()).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def data_info(data: DataSplits, *, with_fingerprint: bool = True) -> dict[str, Any]:
    """What a checkpoint records of the data it was trained on (a resume on other data is refused).

    ``with_fingerprint=False`` skips hashing the values (a fit that writes no checkpoint needs none).
    """
    info = {"name": data.name, "n_train": int(data.train.shape[0]), "n_val": int(data.val.shape[0]),
            "feature_dim": data.feature_dim, "binarize": data.binarize}
    return {**info, "fingerprint": fingerprint(data)} if with_fingerprint else info


def changed_settings(saved: Mapping[str, Any], now: Mapping[str, Any], *, resumable: tuple[str, ...] = (),
                     prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every key whose value differs between two plain-data specs, but the ``resumable``."""
    keys = sorted((set(saved) | set(now)) - set(resumable), key=str)
    return [f"{prefix}{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


LEGACY_MONITORS = ("elbo", "log_q")  # the scores fits used before train.monitor existed


def check_best_monitor(saved: str | None, monitor: str, where: str) -> None:
    """ConfigError when the best epoch of a fit to continue was kept by the score ``saved``, not ``monitor``.

    Call it only for a fit that has a best epoch. ``saved`` None (checkpoints written before
    ``train.monitor``): it was kept by what its task then used, the ELBO or M2's log q(y | x) (``log_q``).
    """
    if saved == monitor or (saved is None and monitor in LEGACY_MONITORS):
        return
    fix = saved or "log_q"
    saved = saved or "elbo or, for M2, log_q (saved before train.monitor existed)"
    raise ConfigError(f"cannot continue {where}: its best epoch was kept by validation {saved}, this fit keeps it by "
                      f"{monitor}; continue with train.monitor={fix!r} (--monitor {fix}), or start a new run")


def check_resumable(ckpt: Mapping[str, Any], train: TrainSpec, data: Mapping[str, Any], path: Path, *,
                    allow_data_change: bool = False) -> None:
    """ConfigError unless ``ckpt`` was trained with ``train`` (up to RESUMABLE_CHANGES) on ``data``.

    A checkpoint written before fingerprints existed is compared without one; with
    ``allow_data_change`` a different fingerprint is only logged. A training setting the
    checkpoint does not record (added to TrainSpec later) is compared at its default.
    """
    saved, now = ckpt.get("spec") or {}, spec_to_dict(train)
    if saved:  # settings added to TrainSpec after the checkpoint was written: it was trained under their defaults
        saved = {**spec_to_dict(TrainSpec()), **saved}
    changed = changed_settings(saved, now, resumable=RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(changed)
        raise ConfigError(
            f"cannot resume {str(path)!r} with different training settings ({diffs}); only "
            f"{', '.join(RESUMABLE_CHANGES)} may change. Resume with the original settings or start a new run folder"
        )
    if train.lr_schedule != "constant" and saved.get("epochs") != now.get("epochs"):
        logger.warning(
            "resuming with epochs %s -> %s under lr_schedule=%r: the remaining epochs follow the schedule of the "
            "new total, so the learning rate is not continuous with the first session's",
            saved.get("epochs"), now.get("epochs"), train.lr_schedule,
        )
    saved_data = dict(ckpt.get("data") or data)
    shape = {k: v for k, v in data.items() if k != "fingerprint"}
    if {k: v for k, v in saved_data.items() if k != "fingerprint"} != shape:
        raise ConfigError(
            f"cannot resume {str(path)!r} on different data: the checkpoint was trained on {saved_data}, "
            f"this call passes {shape}. Load the same dataset and splits, or start a new run folder"
        )
    old, new = saved_data.get("fingerprint"), data.get("fingerprint")
    if old is not None and new is not None and old != new:
        if allow_data_change:
            logger.warning("resuming %s on data whose values changed (fingerprint %s -> %s), as allowed", path,
                           old[:12], new[:12])
            return
        raise ConfigError(
            f"cannot resume {str(path)!r}: the data have the same shape but other values than the checkpoint's "
            f"(fingerprint {old[:12]}... -> {new[:12]}...); load the data the run was trained on, start a new run "
            "folder, or allow it (allow_data_change=True, --allow-data-change)"
        )


__all__ = ["fingerprint", "data_info", "changed_settings", "check_best_monitor", "check_resumable"]
