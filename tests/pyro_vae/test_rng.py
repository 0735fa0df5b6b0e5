"""Seeded blocks: the seed fixes the draws inside, and the caller's generators are where they were after."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pyro_vae.rng import seeded


def _draws() -> tuple[float, float, float]:
    return float(torch.rand(())), random.random(), float(np.random.rand())


def _state() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def _same(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


def test_a_seeded_block_draws_the_same_whatever_the_callers_state_and_restores_it():
    inside = []
    for caller in (1, 2):
        torch.manual_seed(caller), random.seed(caller), np.random.seed(caller)
        before = _state()
        with seeded(7):
            inside.append(_draws())
        assert _same(_state(), before), "the block changed the caller's generators"
    assert inside[0] == inside[1]
    with seeded(8):
        assert _draws() != inside[0]


def test_no_seed_draws_from_the_callers_streams():
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    expected = _draws()
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    with seeded(None):
        assert _draws() == expected


def test_the_state_is_restored_when_the_block_raises():
    torch.manual_seed(4), random.seed(4), np.random.seed(4)
    before = _state()
    with pytest.raises(RuntimeError), seeded(5):
        _draws()
        raise RuntimeError("inside")
    assert _same(_state(), before)


def test_a_cuda_not_yet_started_is_seeded_for_the_block_and_given_back_the_callers_seed(monkeypatch):
    """Where CUDA exists but has not started, torch queues a seed for when it starts: the block queues its own
    seed (a block that starts CUDA draws from it) and its exit queues the caller's (torch.initial_seed())."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", calls.append)
    torch.manual_seed(11)  # (it queues 11 for CUDA itself)
    calls.clear()
    with seeded(7):
        assert calls == [7]
    assert calls == [7, 11] and torch.initial_seed() == 11
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no CUDA: nothing queued
    with seeded(7):
        pass
    assert calls == [7, 11]
