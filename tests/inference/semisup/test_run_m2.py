"""An M2 run folder end to end from the command line, and M1+M2 on the latent means of a VAE run."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from inference import semisup
from inference.cli import main
from inference.run import load_run
from inference.semisup import m1 as m1_module
from inference.semisup.m1 import latent_features, latent_rows
from pyro_vae import build_program, load_dataset
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.labels import labelled_rows, semi_supervised
from pyro_vae.spec import ModelSpec, TrainSpec

SMALL = {"name": "mlp", "hidden": [16]}
M2 = {"model": {"program": {"name": "m2", "classes": 10}, "latent_dim": 3, "encoder": SMALL, "decoder": SMALL},
      "data": {"dataset": "digits", "max_train": 300}, "train": {"elbo": "enum", "batch_size": 100, "epochs": 2}}


def test_train_resume_evaluate_and_classify_an_m2_run(tmp_path, capsys):
    config = tmp_path / "m2.yaml"
    config.write_text(yaml.safe_dump(M2))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--labels", "20", "--out", str(run), "--eval-samples", "4", "-q"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    s = metrics["test"]["semi_supervised"]
    assert set(s) >= {"accuracy", "error", "ece", "confusion", "reliability", "log_likelihood_summed", "khat"}
    assert sum(map(sum, s["confusion"])) == metrics["num_test"] and 0 <= s["ece"] <= 1
    assert len(metrics["history"]) == 2 and "val_accuracy" in metrics["history"][0]["stats"]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["labels"] == 20
    for name in ("reliability", "confusion", "analogies", "class_samples", "classifier_validation", "elbo_curves"):
        assert (run / "figures" / f"{name}.png").is_file()
    assert metrics["monitor"] == "accuracy" and "val_log_q" in metrics["history"][0]["stats"]
    report = (run / "report.md").read_text()
    assert "Semi-supervised (M2)" in report and "by validation accuracy" in report
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3", "--eval-samples", "4", "-q"]) == 0
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 3
    assert main(["evaluate", str(run), "-K", "4", "-q"]) == 0
    assert "ECE" in capsys.readouterr().out
    before = (run / "metrics.json").read_bytes()
    assert main(["evaluate", str(run), "-K", "4", "--refine-steps", "5", "-q"]) == 2  # y is discrete: no refined proposal
    assert "refine_steps" in capsys.readouterr().err and (run / "metrics.json").read_bytes() == before
    assert main(["classify", str(run), "--dataset", "val"]) == 0
    with open(run / "predictions" / "val.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 180 and all(abs(sum(float(r[f"p{c}"]) for c in range(10)) - 1) < 1e-4 for r in rows)
    digits = load_dataset("digits", binarize="threshold")
    torch_file = tmp_path / "new_rows.npz"
    __import__("numpy").savez(torch_file, x=digits.test[:12].numpy(), y=digits.test_labels[:12].numpy())
    assert main(["classify", str(run), "--dataset", str(torch_file), "--out", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and [int(r["label"]) for r in rows] == digits.test_labels[:12].tolist()


def test_an_m2_fit_stopped_and_resumed_equals_one_uninterrupted_fit(tmp_path):
    data = semi_supervised(load_dataset("digits", binarize="dynamic", max_train=200), 20, seed=0)
    spec = ModelSpec(**{**M2["model"], "program": {"name": "m2", "classes": 10}})
    whole = build_program(spec, data_dim=64, seed=0)
    semisup.fit(whole, data, TrainSpec(elbo="enum", epochs=3, batch_size=50), progress=False)
    parts = build_program(spec, data_dim=64, seed=0)
    semisup.fit(parts, data, TrainSpec(elbo="enum", epochs=2, batch_size=50), run_dir=tmp_path, progress=False)
    again = build_program(spec, data_dim=64, seed=0)
    semisup.fit(again, data, TrainSpec(elbo="enum", epochs=3, batch_size=50), run_dir=tmp_path, resume=True,
                progress=False)
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_m1_m2_trains_m2_on_the_latent_means_of_a_vae_run_and_refuses_another_latent_size(tmp_path, capsys, caplog,
                                                                                           monkeypatch):
    vae_config = tmp_path / "vae.yaml"
    vae_config.write_text(yaml.safe_dump({"model": {"latent_dim": 4, "encoder": SMALL, "decoder": SMALL},
                                          "data": {"dataset": "digits", "max_train": 300}, "train": {"epochs": 1}}))
    m1 = tmp_path / "m1"
    assert main(["train", "--config", str(vae_config), "--out", str(m1), "--eval-samples", "2", "-q"]) == 0
    data = semi_supervised(load_dataset("digits", binarize="dynamic", max_train=300), 20, seed=0)
    features = latent_features(m1, data, latent_dim=4)
    assert features.feature_dim == 4 and torch.equal(features.train_labels, data.train_labels)
    assert len(labelled_rows(features)) == 20 and features.test.shape == (len(data.test), 4)
    m2 = build_program(ModelSpec(program={"name": "m2", "classes": 10}, latent_dim=2, likelihood="gaussian_learned",
                                 encoder=SMALL, decoder=SMALL), data_dim=4, seed=0)
    result = semisup.fit(m2, features, TrainSpec(elbo="enum", epochs=2, batch_size=100), progress=False)
    assert len(result.history) == 2
    with pytest.raises(ConfigError, match=r"has latent_dim 4, but the M2 here expects 50 features"):
        latent_features(m1, data, latent_dim=50)
    assert int((latent_features(m1).train.var(0) > 0.01).sum()) == 0  # one epoch: no unit active yet
    with caplog.at_level("WARNING", logger="inference.semisup.m1"):
        drawn = latent_features(m1, data, features="sample")  # the same means, plus q(z | x)'s sds on the training rows
    assert "4 of 4 units of the M1 run" in caplog.text  # all inactive after one epoch: draws would be prior noise
    assert features.train_sd is None and torch.equal(drawn.train, features.train) and torch.equal(drawn.test, features.test)
    _, _, m1_vae = load_run(m1)
    m1_vae.eval()
    with torch.no_grad():
        torch.testing.assert_close(drawn.train_sd, m1_vae.posterior(data.train).stddev)
    assert bool((drawn.train_sd > 0).all())
    assert len(semisup.fit(m2, drawn, TrainSpec(elbo="enum", epochs=1, batch_size=100), progress=False).history) == 1
    with pytest.raises(DataError, match=r"has no active unit .*use data.m1_units: all"):
        latent_features(m1, data, units="active")
    # the same from the command line: data.m1 names the M1 run, recorded in the run's config
    config = tmp_path / "m2.yaml"
    config.write_text(yaml.safe_dump(M2))
    run = tmp_path / "m1m2"
    assert main(["train", "--config", str(config), "--labels", "20", "--m1", str(m1), "--likelihood", "gaussian_learned",
                 "--out", str(run), "--eval-samples", "4", "-q"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["m1"] == str(m1)
    drawn_run = tmp_path / "m1m2_drawn"
    assert main(["train", "--config", str(config), "--labels", "20", "--m1", str(m1), "--m1-features", "sample",
                 "--likelihood", "gaussian_learned", "--out", str(drawn_run), "--eval-samples", "4", "-q"]) == 0
    assert yaml.safe_load((drawn_run / "config.yaml").read_text())["data"]["m1_features"] == "sample"
    assert json.loads((run / "metrics.json").read_text())["test"]["semi_supervised"]["accuracy"] >= 0
    refused = tmp_path / "m1m2_active"  # this M1 has no active unit: refused in one line, nothing written
    assert main(["train", "--config", str(config), "--labels", "20", "--m1", str(m1), "--m1-units", "active",
                 "--likelihood", "gaussian_learned", "--out", str(refused), "-q"]) != 0
    assert "no active unit" in capsys.readouterr().err and not refused.exists()
    rows = tmp_path / "raw_rows.npz"  # new raw rows go through M1 before M2 classifies them
    raw = load_dataset("digits", binarize="threshold")
    __import__("numpy").savez(rows, x=raw.test[:5].numpy(), y=raw.test_labels[:5].numpy())
    loads, load = [], m1_module._load_m1
    monkeypatch.setattr(m1_module, "_load_m1", lambda run_dir: loads.append(run_dir) or load(run_dir))
    assert main(["classify", str(run), "--dataset", str(rows), "--out", str(tmp_path / "m1m2.csv")]) == 0
    assert len(loads) == 1, "the M1 run is loaded once: the run's features encode the new rows"
    with open(tmp_path / "m1m2.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 5


def test_resuming_with_another_validation_score_is_refused_before_anything_is_written(tmp_path, capsys):
    """The best epoch kept so far was chosen by one score; continuing by another would compare accuracies with
    log-likelihoods. A checkpoint from before train.monitor (no name saved) was kept by log q for M2."""
    from inference.training import load_checkpoint, save_checkpoint

    config = tmp_path / "m2.yaml"
    config.write_text(yaml.safe_dump(M2))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--labels", "20", "--out", str(run), "--eval-samples", "4", "-q"]) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3", "--monitor", "log_q", "-q"]) == 2
    err = capsys.readouterr().err
    assert "kept by validation accuracy, this fit keeps it by log_q" in err and "--monitor accuracy" in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    last = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["best"]["monitor"], ckpt["checksum"]  # as written before train.monitor existed
    save_checkpoint(last, ckpt)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3", "--eval-samples", "4", "-q"]) == 2
    assert "saved before train.monitor existed" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3", "--monitor", "log_q", "--eval-samples", "4",
                 "-q"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["monitor"] == "log_q" and len(metrics["history"]) == 3


def test_m1_m2_on_active_units_keeps_the_units_whose_means_vary_over_m1s_training_rows(tmp_path):
    from inference import run

    m1 = tmp_path / "m1"
    run.train({"model": {"latent_dim": 4, "encoder": SMALL, "decoder": SMALL},
               "data": {"dataset": "digits", "max_train": 300}, "train": {"epochs": 30, "lr": 0.01}},
              m1, eval_samples=2, progress=False)
    data = semi_supervised(load_dataset("digits", binarize="dynamic", max_train=300), 20, seed=0)
    every = latent_features(m1, data)
    active = torch.nonzero(latent_features(m1).train.var(0) > 0.01).flatten()  # on M1's own training rows
    assert 0 < active.numel() < 4, "the check needs an M1 with some units active and some not"
    kept = latent_features(m1, data, units="active")
    assert kept.feature_dim == active.numel() and torch.equal(kept.train_labels, data.train_labels)
    torch.testing.assert_close(kept.test, every.test[:, active], rtol=0, atol=0)
    torch.testing.assert_close(latent_rows(m1, data.test[:5], units="active"), every.test[:5, active], rtol=0, atol=0)
    torch.testing.assert_close(kept.encode_rows(data.test[:5], "new rows"), every.test[:5, active], rtol=0, atol=0)
    with pytest.raises(DataError, match=r"encodes rows of 64 features, but new rows has 3"):
        kept.encode_rows(data.test[:5, :3], "new rows")


def test_a_flow_m1s_features_are_the_same_in_every_call(tmp_path):
    from inference import run

    m1 = tmp_path / "m1"
    run.train({"model": {"latent_dim": 3, "encoder": SMALL, "decoder": SMALL, "guide": {"name": "iaf", "num_flows": 1}},
               "data": {"dataset": "digits", "max_train": 200}, "train": {"epochs": 2, "lr": 0.01}},
              m1, eval_samples=2, progress=False)
    data = load_dataset("digits", binarize="dynamic", max_train=200)
    torch.manual_seed(5)
    first = latent_features(m1, data)
    torch.manual_seed(6)  # another random state in the caller: a flow's mean is a Monte Carlo estimate
    caller = torch.get_rng_state()
    second = latent_features(m1, data)
    assert torch.equal(torch.get_rng_state(), caller), "encoding moved the caller's torch RNG"
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(latent_rows(m1, data.test), first.test, rtol=0, atol=0)  # new rows: the same features
    assert first.train.var(0).min() > 0, "the features vary over the rows"
