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
