"""Devices: resolution and its errors, and the placement rule (every tensor follows the module's device and dtype).

No GPU here: the placement is proven with float64 (a float32 tensor created anywhere in a step
would meet a float64 layer and fail) and with the ``meta`` device (a CPU tensor meeting a meta
one fails), and checkpoints load onto another device through ``map_location``.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from inference import svi
from inference.log_weights import log_weights
from inference.devices import available_devices, module_placement, resolve_device, to_placement
from inference.training import load_checkpoint
from pyro_vae import build_vae
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.spec import TrainSpec

SMALL = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [16]}, decoder={"name": "mlp", "hidden": [16]})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarize="dynamic", max_train=200)


def test_resolution_of_each_form():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("meta")).type == "meta"
    assert available_devices()[0] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_names_what_is_available():
    with pytest.raises(ConfigError, match=r"device='cuda'.*no CUDA device.*available: cpu"):
        resolve_device("cuda")


def test_out_of_range_index_names_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"'cuda:5'.*index 5 is out of range.*has 2.*cuda:0, cuda:1"):
        resolve_device("cuda:5")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CPU", 0, None])
def test_malformed_device_in_the_spec_is_refused(bad):
    with pytest.raises(ConfigError, match="train.device"):
        TrainSpec(device=bad)


def test_batches_follow_the_modules_device_and_dtype():
    batch = {"x": torch.zeros(2, 3), "idx": torch.arange(2)}
    out = to_placement(batch, torch.device("meta"), torch.float64)
    assert out["x"].device.type == "meta" and out["x"].dtype == torch.float64
    assert out["idx"].dtype == torch.int64  # indices keep their type


@pytest.mark.parametrize("prior", ["normal", "laplace", "student_t", {"name": "mixture", "components": 3}])
def test_model_guide_and_log_weights_on_the_meta_device_create_no_cpu_tensor(digits, prior):
    """Pyro's ELBOs call .item(), which meta tensors lack; the traces and our log-weights do not."""
    vae = build_vae(data_dim=digits.feature_dim, prior=prior, **SMALL).to("meta")
    x = digits.train[:8].to("meta")
    with pyro.validation_enabled(False):  # argument checks read values, which meta tensors do not have
        guide = poutine.trace(vae.guide).get_trace(x, num_data=100, beta=0.5)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, num_data=100, beta=0.5)
        elbo = model.log_prob_sum() - guide.log_prob_sum()
        lw = log_weights(vae.model, vae.guide, 3, x=x, site_scales=False)
        generated = poutine.trace(vae.model).get_trace(num_samples=3)  # no x to take the device from
    assert elbo.device.type == "meta" and lw.log_p.device.type == "meta" and lw.log_q.shape == (3, 8)
    assert generated.nodes["x"]["value"].device.type == "meta"


@pytest.mark.parametrize("elbo", ["trace", "meanfield", "iwae"])
def test_a_float64_program_trains_validates_and_scores_in_float64(digits, elbo):
    vae = build_vae(data_dim=digits.feature_dim, seed=0, **SMALL).double()
    result = svi.fit(vae, digits, TrainSpec(epochs=1, batch_size=50, elbo=elbo), progress=False)
    assert module_placement(vae) == (torch.device("cpu"), torch.float64)
    assert all(p.dtype == torch.float64 for p in vae.parameters())
    assert result.history[0].val_elbo is not None


def test_checkpoints_load_onto_another_device_through_map_location(digits, tmp_path):
    vae = build_vae(data_dim=digits.feature_dim, seed=0, **SMALL)
    svi.fit(vae, digits, TrainSpec(epochs=1, batch_size=50), run_dir=tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt", map_location="meta")  # checksum checked first
    assert {t.device.type for t in ckpt["vae"].values()} == {"meta"}
    moments = [t for s in ckpt["optimizers"]["theta"]["state"].values() for t in s.values() if t.is_floating_point()]
    assert moments and {t.device.type for t in moments} == {"meta"}
    assert ckpt["rng"]["torch"].device.type == "cpu"  # RNG states stay where torch keeps them
    # resuming on another device is allowed (the device is a resumable setting); here "auto" is the CPU
    again = build_vae(data_dim=digits.feature_dim, seed=0, **SMALL)
    result = svi.fit(again, digits, TrainSpec(epochs=2, batch_size=50, device="auto"), run_dir=tmp_path, resume=True,
                     progress=False)
    assert [r.epoch for r in result.history] == [1, 2]


def test_device_argument_overrides_the_spec_and_is_checked(digits):
    vae = build_vae(data_dim=digits.feature_dim, seed=0, **SMALL)
    with pytest.raises(ConfigError, match="device='gpu'"):
        svi.fit(vae, digits, TrainSpec(epochs=1, batch_size=50), device="gpu", progress=False)
    pyro.clear_param_store()


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.py runs it)")


@CUDA
def test_cuda_fit_round_trips_through_a_cpu_resume_and_back(digits, tmp_path):
    vae = build_vae(data_dim=digits.feature_dim, seed=0, **SMALL)
    svi.fit(vae, digits, TrainSpec(epochs=1, batch_size=50), device="cuda", run_dir=tmp_path, progress=False)
    assert module_placement(vae)[0].type == "cuda"
    on_cpu = build_vae(data_dim=digits.feature_dim, seed=0, **SMALL)  # a GPU run resumed on the CPU ...
    svi.fit(on_cpu, digits, TrainSpec(epochs=2, batch_size=50), device="cpu", run_dir=tmp_path, resume=True,
            progress=False)
    assert module_placement(on_cpu)[0].type == "cpu"
    back = build_vae(data_dim=digits.feature_dim, seed=0, **SMALL)  # ... and back on the GPU
    result = svi.fit(back, digits, TrainSpec(epochs=3, batch_size=50), device="cuda:0", run_dir=tmp_path,
                     resume=True, progress=False)
    assert [r.epoch for r in result.history] == [1, 2, 3] and all(math.isfinite(r.train_elbo) for r in result.history)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt", map_location="cuda")
    assert {t.device.type for t in ckpt["vae"].values()} == {"cuda"}


@CUDA
def test_cuda_run_folder_evaluates_and_samples_on_the_cpu(tmp_path):
    from inference import run

    spec = {"model": {"latent_dim": 2, **{k: SMALL[k] for k in ("encoder", "decoder")}},
            "data": {"dataset": "digits", "max_train": 200}, "train": {"epochs": 1, "batch_size": 50, "device": "auto"}}
    result = run.train(spec, tmp_path / "run", eval_samples=10, progress=False)
    assert result.metrics["device"]["device"].startswith("cuda")
    assert run.evaluate_run(tmp_path / "run", num_samples=10, progress=False, device="cpu")["log_likelihood"]["n"] > 0
    assert run.sample_run(tmp_path / "run", n=4, device="cuda").draws.device.type == "cpu"


def test_figures_of_a_program_elsewhere_are_drawn_on_a_cpu_float32_copy(digits, tmp_path):
    from pyro_vae.plots import save_run_figures

    vae = build_vae(data_dim=digits.feature_dim, seed=0, **SMALL).double()
    paths = save_run_figures(vae, digits, None, tmp_path)
    assert {p.name for p in paths} >= {"reconstructions.png", "latent_space.png"}
    assert next(vae.parameters()).dtype == torch.float64  # the program itself is left where it was


@CUDA
def test_cuda_diagnose_runs_on_the_gpu(tmp_path):
    from inference import run
    from inference.diagnostics import diagnose_run

    spec = {"model": {"latent_dim": 2, **{k: SMALL[k] for k in ("encoder", "decoder")}},
            "data": {"dataset": "digits", "max_train": 200}, "train": {"epochs": 1, "batch_size": 50}}
    run.train(spec, tmp_path / "run", eval_samples=10, progress=False)
    result = diagnose_run(tmp_path / "run", mcmc_points=2, samples=20, warmup=20, chains=2, gap_points=3,
                          is_samples=50, local_steps=20, ppc_draws=5, rows=20, progress=False, device="cuda")
    assert result.files["report"].is_file()


@CUDA
def test_cuda_compare_trains_and_scores_on_the_gpu(digits, tmp_path):
    from inference.compare import run_compare

    spec = {"model": {"latent_dim": 2, **{k: SMALL[k] for k in ("encoder", "decoder")}}, "train": {"batch_size": 50}}
    result = run_compare(spec, digits, methods="svi-trace,map,local-vi,mcem", train_sizes=[200], budget="1epochs",
                         num_samples=10, eval_rows=20, out=tmp_path, device="cuda")
    assert result.device.startswith("cuda") and "device: cuda" in (tmp_path / "results.md").read_text()
    rows = {r.method: r for r in result.rows}
    assert all(math.isfinite(rows[m].heldout.mean) for m in ("svi-trace", "map", "local-vi"))
    assert rows["mcem"].heldout is None and "CPU only" in rows["mcem"].notes


@CUDA
def test_a_seeded_block_that_starts_cuda_draws_from_its_seed():
    """In a fresh process (CUDA not started): the block's CUDA draws are fixed by its seed whatever the
    caller's, and after it CUDA draws as if started from the caller's seed."""
    import subprocess
    import sys

    script = (
        "import sys, torch; from pyro_vae.rng import seeded\n"
        "torch.manual_seed(int(sys.argv[1]))\n"
        "with seeded(5):\n"
        "    inside = torch.rand(3, device='cuda').tolist()\n"
        "after = torch.rand(3, device='cuda').tolist()\n"
        "torch.cuda.manual_seed_all(int(sys.argv[1])); fresh = torch.rand(3, device='cuda').tolist()\n"
        "print(inside, after == fresh)\n"
    )
    outs = [subprocess.run([sys.executable, "-c", script, str(caller)], capture_output=True, text=True, check=True)
            .stdout.strip() for caller in (1, 2)]
    assert outs[0] == outs[1] and outs[0].endswith("True"), outs
