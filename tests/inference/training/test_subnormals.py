"""Subnormal floats are flushed to zero while a fit runs, and the mode found before is put back."""

from __future__ import annotations

import pytest
import torch

from inference import svi
from inference.training.subnormals import flushing_now, flushing_subnormals
from pyro_vae import build_vae
from pyro_vae.data import load_dataset
from pyro_vae.spec import TrainSpec

TINY = torch.finfo(torch.float32).tiny  # 2^-126: the smallest normal float32

pytestmark = pytest.mark.skipif(not torch.set_flush_denormal(False),
                                reason="this CPU has no flush-to-zero flags")


def subnormal_product() -> float:
    return float(torch.tensor([1e-30]) * torch.tensor([1e-10]))  # 1e-40 < TINY


def test_inside_the_block_a_subnormal_result_is_zero_and_after_it_is_not():
    assert not flushing_now() and 0 < subnormal_product() < TINY
    with flushing_subnormals() as on:
        assert on and flushing_now() and subnormal_product() == 0.0
        assert float(torch.tensor([2 * TINY]) * 0.75) == pytest.approx(1.5 * TINY, rel=1e-6)  # normal floats untouched
    assert not flushing_now() and 0 < subnormal_product() < TINY


def test_a_mode_set_outside_is_left_as_it_was_and_disabled_changes_nothing():
    torch.set_flush_denormal(True)
    try:
        with flushing_subnormals():
            assert flushing_now()
        assert flushing_now()  # the caller's mode, not switched off
    finally:
        torch.set_flush_denormal(False)
    with flushing_subnormals(enabled=False) as on:
        assert not on and not flushing_now()


def test_the_training_loop_runs_with_subnormals_flushed_and_restores_the_mode():
    data = load_dataset("digits", binarize="dynamic", max_train=100)
    vae = build_vae(data_dim=data.feature_dim, latent_dim=2, encoder={"name": "mlp", "hidden": [8]},
                    decoder={"name": "mlp", "hidden": [8]}, seed=0)
    seen = []
    svi.fit(vae, data, TrainSpec(epochs=2, batch_size=50, seed=0), progress=False,
            callbacks=[lambda state, record: seen.append(flushing_now())])
    assert seen == [True, True] and not flushing_now()
