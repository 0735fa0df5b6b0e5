"""Atomic checkpoint save/load and RNG capture/restore."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from inference.training.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint, vae_state
from pyro_vae.errors import ConfigError, TrainingError


def test_save_load_roundtrip_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "last.pt"  # the folder is created
    state = {"epoch": 3, "w": torch.arange(5.0), "history": [{"epoch": 1, "val_elbo": None}], "name": "x"}
    assert save_checkpoint(path, state) == path
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["name"] == "x" and loaded["history"] == state["history"]
    assert torch.equal(loaded["w"], state["w"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_checkpoint_says_start_without_resume(tmp_path):
    with pytest.raises(ConfigError, match=r"last\.pt.*without --resume"):
        load_checkpoint(tmp_path / "last.pt")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_corrupt_checkpoint_names_file(tmp_path, content):
    path = tmp_path / "last.pt"
    if content == "truncated":
        save_checkpoint(path, {"w": torch.randn(1000)})
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(TrainingError, match=r"last\.pt.*corrupt.*without --resume"):
        load_checkpoint(path)


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.ones(2), path)
    with pytest.raises(TrainingError, match="not a checkpoint dict"):
        load_checkpoint(path)


def _draws(gen):
    return (torch.rand(4).tolist(), random.random(), np.random.rand(3).tolist(), torch.rand(2, generator=gen).tolist())


def test_rng_capture_restore_through_a_file(tmp_path):
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng(gen)})
    first = _draws(gen)
    torch.manual_seed(99), random.seed(99), np.random.seed(99), gen.manual_seed(99)
    restore_rng(load_checkpoint(path)["rng"], gen)
    assert _draws(gen) == first
    # without a generator argument the generator is left alone
    state = capture_rng()
    assert "generator" not in state
    restore_rng(state)


def test_vae_state_picks_best_or_last():
    last, best = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    assert vae_state({"vae": last, "best": {"vae": best}}) is best
    assert vae_state({"vae": last, "best": {"vae": best}}, "last") is last
    assert vae_state({"vae": last, "best": {"epoch": None, "vae": None}}, "best") is last  # no validation split
    with pytest.raises(ConfigError, match="'best' or 'last'"):
        vae_state({"vae": last}, "middle")


def test_a_checkpoint_of_this_format_without_its_checksum_is_refused(tmp_path):
    """Deleting the checksum must not be a way round it: a format-2 file without one is not trusted."""
    from inference.training.checkpoint import FORMAT

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": FORMAT, "epoch": 1, "w": torch.ones(3)})
    state = torch.load(path, weights_only=True)
    del state["checksum"]
    torch.save(state, path)
    with pytest.raises(TrainingError, match="checksum"):
        load_checkpoint(path)
