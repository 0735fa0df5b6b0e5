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


TEAM_SCRIPT = """
import torch
from inference.training.subnormals import _openmp_runtime, flushing_subnormals
torch.set_num_threads(2)
def zeros():  # the fraction of 1e-30 * 1e-10 = 1e-40 that comes out 0; 2e6 elements are split over both threads
    x = torch.full((2_000_000,), 1e-30) * torch.full((2_000_000,), 1e-10)
    return float((x == 0).double().mean())
before = zeros()  # this also makes PyTorch's thread team, before the flags are set
with flushing_subnormals():
    inside = zeros()
print(_openmp_runtime() is not None, before, inside, zeros())
"""


def test_the_intra_op_threads_flush_too():
    """A fresh process with two intra-op threads made before the block: inside it every share of an elementwise
    product is flushed, not only the training thread's half; after it none is."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", TEAM_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    found, before, inside, after = out.stdout.split()
    if found != "True":
        pytest.skip("no OpenMP runtime with GOMP_parallel in this process (the flags cover the training thread only)")
    assert (float(before), float(inside), float(after)) == (0.0, 1.0, 0.0)
