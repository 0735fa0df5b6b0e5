"""complete_run / pyro-vae complete on run folders: a cvae run and a VAE run on digits (two epochs each)."""

from __future__ import annotations

import json

import pytest
import torch

from inference import run
from inference.cli import main
from inference.completion.api import complete_run
from pyro_vae import ConfigError

NETS = {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}}


def spec(program):
    return {"model": {"program": program, **NETS}, "data": {"dataset": "digits", "binarize": "threshold"},
            "train": {"epochs": 2, "batch_size": 100, "seed": 0}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("completion-runs")
    run.train(spec({"name": "cvae", "task": "superres", "factor": 2}), root / "cvae", eval_samples=20, progress=False)
    run.train(spec("vae"), root / "vae", eval_samples=20, progress=False)
    return root


def test_a_cvae_run_completes_its_own_task_and_refuses_another(runs):
    out = complete_run(runs / "cvae", mask="downsample:2", rows=10, samples=3, num_samples=20)
    m = json.loads((runs / "cvae" / "completion" / "downsample-2_model" / "metrics.json").read_text())
    assert m["conditional_nll"] == pytest.approx(out.metrics["conditional_nll"]) and m["reobservation_rmse"] >= 0
    assert {p.name for p in out.files.values()} == {"metrics.json", "grid.png", "report.md"}
    before = sorted((runs / "cvae" / "completion").rglob("*"))
    with pytest.raises(ConfigError, match="trained for 'superres downsample:2'"):
        complete_run(runs / "cvae", mask="quadrants:1", rows=10)
    with pytest.raises(ConfigError, match="--method model"):
        complete_run(runs / "cvae", mask="downsample:2", method="sir", rows=10)
    assert sorted((runs / "cvae" / "completion").rglob("*")) == before  # refused before writing


@pytest.mark.parametrize("method", ["naive", "sir", "mwg"])
def test_a_vae_run_completes_by_inference(runs, method, capsys):
    assert main(["complete", str(runs / "vae"), "--mask", "quadrants:2", "--method", method, "--rows", "6",
                 "--samples", "2", "-K", "20"]) == 0
    assert "conditional NLL" in capsys.readouterr().out
    index = json.loads((runs / "vae" / "completion" / "metrics.json").read_text())
    assert index[f"quadrants-2_{method}"]["pixel_sd"] >= 0


def test_bad_completion_requests_are_refused(runs):
    with pytest.raises(ConfigError, match="--rows 5000"):
        complete_run(runs / "vae", rows=5000)
    with pytest.raises(ConfigError, match="--method model needs a conditional run"):
        complete_run(runs / "vae", method="model", rows=5)
    assert main(["complete", str(runs / "vae"), "--mask", "random:1.0", "--rows", "5"]) == 2
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device"):
            complete_run(runs / "vae", rows=5, device="cuda")


def test_completion_on_an_explicit_cpu_device_matches_the_default(runs):
    a = complete_run(runs / "vae", mask="quadrants:1", method="naive", rows=4, samples=2, num_samples=10)
    b = complete_run(runs / "vae", mask="quadrants:1", method="naive", rows=4, samples=2, num_samples=10, device="cpu")
    drop = lambda m: {k: v for k, v in m.items() if k != "seconds"}  # noqa: E731
    assert drop(a.metrics) == drop(b.metrics)


def test_local_vi_completion_fits_its_per_row_proposal_once_and_scores_with_it(runs, monkeypatch):
    """--method local_vi with the default proposal local_vi: one VI fit serves the completion and the score."""
    import inference.completion.proposals as proposals
    import inference.completion.samplers as samplers
    import inference.completion.yardstick as yardstick

    real, calls = proposals.local_vi_guide, []

    def counted(*args, **kwargs):
        calls.append(args[1].shape)
        return real(*args, **kwargs)

    for module in (samplers, yardstick):
        monkeypatch.setattr(module, "local_vi_guide", counted)
    out = complete_run(runs / "vae", mask="quadrants:1", method="local_vi", rows=4, samples=2, num_samples=20)
    assert calls == [torch.Size([4, 64])]
    assert out.metrics["conditional_nll"] > 0 and out.metrics["khat_max"] == out.metrics["khat_max"]
    complete_run(runs / "vae", mask="quadrants:1", method="sir", rows=4, samples=2, num_samples=20)
    assert len(calls) == 2  # another method still fits the proposal for the score
