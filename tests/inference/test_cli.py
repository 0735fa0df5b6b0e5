"""The command line end to end on the embedded digits, and its error handling."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from inference.cli import main

TINY = ["--epochs", "3", "--latent-dim", "2", "--eval-samples", "50", "--lr-schedule", "cosine", "-q"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    cfg = out.parent / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]}}}))
    assert main(["train", "--config", str(cfg), "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(run_dir, capsys):
    for rel in ["config.yaml", "metrics.json", "report.md", "checkpoints/last.pt", "checkpoints/best.pt",
                "figures/elbo_curves.png", "figures/reconstructions.png", "figures/prior_samples.png",
                "figures/latent_space.png", "figures/latent_manifold.png"]:
        assert (run_dir / rel).is_file(), rel
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["dataset"] == "digits"
    ll = metrics["test"]["log_likelihood"]
    assert ll["num_samples"] == 50 and ll["n"] == metrics["num_test"]
    # The IS estimate is a tighter bound than the ELBO (up to Monte Carlo error).
    assert ll["mean"] >= metrics["test"]["elbo_a"]["mean"] - 3 * metrics["test"]["elbo_a"]["stderr"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["latent_dim"] == 2 and config["train"]["epochs"] == 3  # flags override the file
    assert config["train"]["lr_schedule"] == "cosine"
    lrs = [r["lr"] for r in metrics["history"]]
    assert lrs[0] == pytest.approx(config["train"]["lr"]) and lrs[-1] == pytest.approx(config["train"]["lr"] / 100)


def test_evaluate_adds_log_px_with_the_refined_proposal(run_dir, capsys):
    """--refine-steps keeps the estimate with the encoder's q and adds the one from q*_i, refined per row; on the
    same model both are IS estimates of the same log p(x), so their difference is recorded as the gain. q*_i starts
    at the encoder and raises each row's ELBO, so the refined estimate may not fall below the encoder's beyond
    the two estimates' standard errors (4 of each)."""
    assert main(["evaluate", str(run_dir), "-K", "50", "--eval-rows", "40", "--refine-steps", "30", "-q"]) == 0
    said = capsys.readouterr().out
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    refined, amortized = test["log_likelihood_refined"], test["log_likelihood"]
    assert refined["n"] == amortized["n"] == 40 and refined["num_samples"] == 50 and refined["refine_steps"] == 30
    assert refined["gain"] == pytest.approx(refined["mean"] - amortized["mean"])
    assert refined["gain"] > -4 * (refined["stderr"] + amortized["stderr"])
    assert "refined per row, 30 steps" in said and "refined per row (30 steps)" in (run_dir / "report.md").read_text()


def test_evaluate_is_fixed_by_the_runs_seed_whatever_the_callers_random_state(run_dir):
    from inference.run import evaluate_run

    scores = []
    for caller in (1, 2):
        torch.manual_seed(caller)
        before = torch.get_rng_state()
        scores.append(evaluate_run(run_dir, num_samples=20, rows=30, progress=False)["log_likelihood"]["mean"])
        assert torch.equal(torch.get_rng_state(), before)
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_evaluate_sample_and_resume(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "-K", "100", "-q"]) == 0
    assert "K=100" in capsys.readouterr().out
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["log_likelihood"]["num_samples"] == 100
    assert main(["sample", str(run_dir), "-n", "9", "--seed", "1"]) == 0
    said = capsys.readouterr().out
    samples = torch.load(run_dir / "samples" / "samples_n9_seed1.pt")
    assert {k: tuple(v.shape) for k, v in samples.items() if k != "latents"} == {"z": (9, 2), "draws": (9, 64), "means": (9, 64)}
    assert list(samples["latents"]) == ["z"] and torch.equal(samples["latents"]["z"], samples["z"])
    assert set(samples["draws"].unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws, not means
    assert bool(((samples["means"] > 0) & (samples["means"] < 1)).all())
    for name in ("samples_n9_seed1_draws.png", "samples_n9_seed1_means.png"):
        assert (run_dir / "samples" / name).is_file() and name in said
    before = sorted(p.name for p in (run_dir / "samples").iterdir())
    for bad in ("0", "-3"):
        assert main(["sample", str(run_dir), "-n", bad]) == 2
        assert "n must be a positive integer" in capsys.readouterr().err
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == before  # nothing written for a refused call
    # Training into an existing run needs --resume; resuming with more epochs extends it.
    assert main(["train", "--out", str(run_dir), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run_dir), "--resume", "--epochs", "4", "-q", "--eval-samples", "50"]) == 0
    assert len(json.loads((run_dir / "metrics.json").read_text())["history"]) == 4


def test_list_prints_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ["vamp", "student_t", "continuous_bernoulli", "poisson", "conv", "lowrank_normal", "meanfield"]:
        assert name in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prior", "gaussian"], "unknown prior 'gaussian'; valid priors are: laplace"),
        (["--likelihood", "bernoulli", "--binarize", "none"], "binarize"),
        (["--dataset", "nosuchdata"], "nosuchdata"),
        (["--elbo", "elbow"], "choose one of"),
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--latent-dim", "-1"], "latent_dim must be a positive integer"),
        (["--lr-schedule", "linear"], "lr_schedule='linear' is not valid"),
        (["--lr-final", "1e-5"], "no effect with lr_schedule='constant'"),
        (["--monitor", "accuracy"], "train.monitor='accuracy' is not a validation score of 'vae'"),
    ],
)
def test_bad_input_exits_with_a_clear_message(tmp_path, capsys, argv, message):
    code = main(["train", "--out", str(tmp_path / "r2"), "-q", *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()  # refused before the run folder is made


def test_resume_without_a_run_is_refused(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "empty"), "--resume", "-q"]) == 2
    assert "without --resume" in capsys.readouterr().err


def test_progress_in_a_log_is_lines_not_carriage_returns(tmp_path, capsys):
    """stderr captured by pytest is not a terminal: a log gets one line per epoch, never a redrawn bar."""
    argv = ["train", "--out", str(tmp_path / "run"), "--epochs", "2", "--latent-dim", "2", "--eval-samples", "5"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "svi trace: epoch 2/2, train" in err


def test_widths_activation_and_optimizer_flags_reach_the_spec(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--hidden", "16", "8", "--activation", "tanh", "--optimizer", "clipped_adam",
            "--epochs", "1", "--latent-dim", "2", "--eval-samples", "5", "-q"]
    assert main(argv) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    for part in ("encoder", "decoder"):
        assert config["model"][part] == {"name": "mlp", "hidden": [16, 8], "activation": "tanh"}
    assert config["train"]["optimizer"] == "clipped_adam"


def test_a_model_a_command_cannot_handle_is_one_line_not_a_traceback(monkeypatch, capsys):
    from inference import cli
    from pyro_vae.errors import UnsupportedModelError

    def refuse(args):
        raise UnsupportedModelError("this program has no such site; use another command")

    monkeypatch.setattr(cli, "_list", refuse)
    assert main(["list"]) == 2
    assert capsys.readouterr().err == "pyro-vae: error: this program has no such site; use another command\n"
