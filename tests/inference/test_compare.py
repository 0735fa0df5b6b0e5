"""`pyro-vae compare` (inference.compare): one table row per method x training size, every number
from the one yardstick, the figure, and clear errors -- on digits with tiny budgets."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from PIL import Image

import inference.evaluate as evaluate_module
from inference import compare
from inference.methods import Budget
from inference.cli import main
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError, DataError

SPEC = {
    "model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}},
    "data": {"dataset": "digits", "binarize": "dynamic"},
    "train": {"lr": 1e-2, "batch_size": 100, "seed": 0},
}
METHODS = ["svi-trace", "iwae", "rws", "map"]
SIZES = [200, 600]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarize="dynamic")


@pytest.fixture(scope="module")
def spied_run(digits, tmp_path_factory):
    """One small comparison, with evaluate.log_likelihood wrapped to record every estimate it returns."""
    returned = []
    real = evaluate_module.log_likelihood

    def spy(model, guide, x, **kwargs):
        out = real(model, guide, x, **kwargs)
        returned.append(out)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(evaluate_module, "log_likelihood", spy)
    try:
        out = tmp_path_factory.mktemp("compare")
        result = compare.run_compare(SPEC, digits, methods=METHODS, train_sizes=SIZES, budget="2epochs",
                                     num_samples=20, eval_rows=40, checkpoints=(0.5,), out=out)
    finally:
        mp.undo()
    return result, returned, out


def test_a_row_per_method_and_size_with_finite_numbers(spied_run):
    result, _, _ = spied_run
    assert [(r.method, r.train_size) for r in result.rows] == [(m, n) for n in SIZES for m in METHODS]
    for r in result.rows:
        for s in (r.heldout, r.train, r.test_elbo):
            assert s is not None and math.isfinite(s.mean) and math.isfinite(s.stderr)
        assert r.heldout.n == r.train.n == 40 and r.heldout.num_samples == 20
        assert r.wall_time > 0 and r.samples_evaluated > 0 and r.epochs == 2
        assert r.test_elbo.mean <= r.heldout.mean + 4 * (r.heldout.stderr + r.test_elbo.stderr)  # ELBO <= log p(x)
    assert result.row("iwae", 200).samples_evaluated == 5 * result.row("svi-trace", 200).samples_evaluated
    assert result.row("map", 600).samples_evaluated == 2 * 600


def test_every_number_comes_from_evaluate_log_likelihood(spied_run):
    result, returned, _ = spied_run
    means = {e.mean for e in returned}
    for r in result.rows:
        assert r.heldout.mean in means and r.train.mean in means
    for p in result.curve:
        assert p.heldout.mean in means
    # per row: held-out + training scores, plus one curve score for the half-budget checkpoint
    assert len(returned) == len(result.rows) * 3


def test_files_table_csv_and_figure(spied_run):
    result, _, out = spied_run
    assert {p.name for p in result.files} == set(compare.FILES)
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(METHODS) * len(SIZES)
    assert all(math.isfinite(float(r["heldout_logpx"])) and r["K"] == "20" for r in rows)
    md = (out / "results.md").read_text()
    assert "| svi-trace | 200 |" in md and "figure3.png" in md and "inference.evaluate.log_likelihood" in md
    png = Image.open(out / "figure3.png")
    assert png.format == "PNG" and "held-out log p(x)" in png.info.get("Title", "")
    curve = {(p.method, p.train_size, p.fraction) for p in result.curve}
    assert curve == {(m, n, f) for m in METHODS for n in SIZES for f in (0.5, 1.0)}


def test_unknown_method_lists_the_valid_ones_before_training(digits):
    with pytest.raises(ConfigError, match=r"unknown inference method 'wake-sleep'.*valid inference methods are:.*rws"):
        compare.run_compare(SPEC, digits, methods="svi-trace,wake-sleep", train_sizes=[100], budget="1epochs")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"budget": "60"}, ConfigError, "number and a unit"),
    ({"budget": "ten epochs"}, ConfigError, "number and a unit"),
    ({"budget": "2.5epochs"}, ConfigError, "whole number"),
    ({"train_sizes": "100,abc"}, ConfigError, "not a number"),
    ({"train_sizes": [100, 0]}, ConfigError, "positive whole number"),
    ({"train_sizes": [100, 10_000]}, DataError, "larger than the 1258 training rows"),
    ({"checkpoints": (0.5, 2)}, ConfigError, r"\(0, 1\]"),
])
def test_bad_settings_fail_before_training(digits, kwargs, error, match):
    settings = {"methods": ["svi-trace"], "train_sizes": [100], "budget": "1epochs", **kwargs}
    with pytest.raises(error, match=match):
        compare.run_compare(SPEC, digits, **settings)


def test_subsets_are_nested_and_fixed_by_the_seed(digits):
    small, large = compare.subset(digits, 100, seed=3), compare.subset(digits, 500, seed=3)
    assert torch.equal(small.train, large.train[:100])
    assert torch.equal(small.train_labels, large.train_labels[:100])
    assert torch.equal(compare.subset(digits, 100, seed=3).train, small.train)
    assert not torch.equal(compare.subset(digits, 100, seed=4).train, small.train)
    assert small.test is digits.test


def test_cli_compare_writes_the_results(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--dataset", "digits", "--methods", "svi-trace,rws", "--train-sizes", "300",
                 "--budget", "1epochs", "-K", "10", "--eval-rows", "20", "--checkpoints", "1", "--out", str(out), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| svi-trace | 300 |" in printed and "| rws | 300 |" in printed
    assert all((out / name).is_file() for name in compare.FILES)


def test_cli_compare_reports_a_bad_budget(tmp_path, capsys):
    code = main(["compare", "--dataset", "digits", "--train-sizes", "300", "--budget", "soon", "--out", str(tmp_path)])
    assert code == 2
    assert "cannot read budget 'soon'" in capsys.readouterr().err


def test_budget_string_round_trip():
    assert str(Budget.parse("60s,20epochs")) == "20 epochs or 60 s"
