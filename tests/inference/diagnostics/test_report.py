"""`pyro-vae diagnose`: the report, the figures, diagnostics.json and the netCDF files of a run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference import diagnostics as dg


@pytest.mark.slow
def test_cli_diagnose_writes_the_report_and_the_netcdf_files(tmp_path, capsys):
    from inference.run import train
    from inference.cli import main

    run_dir = tmp_path / "digits"
    spec = {"model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}},
            "train": {"epochs": 2}}
    train(spec, run_dir, eval_samples=20, progress=False)
    argv = ["diagnose", str(run_dir), "--mcmc-points", "3", "--samples", "40", "--warmup", "40", "--gap-points", "5",
            "--is-samples", "50", "--local-steps", "20", "--ppc-draws", "10", "-q"]
    assert main(argv) == 0
    out = run_dir / "diagnostics"
    for name in ["report.md", "guide.nc", "mcmc.nc", "mcmc_summary.csv", "diagnostics.json", "trace.png", "rank.png",
                 "khat.png", "gaps.png", "vi_vs_mcmc.png", "kl_per_dim.png", "ppc_moments.png", "ppc_loglik.png",
                 "ppc_arviz.png"]:
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    for text in ["R-hat", "ESS", "divergences", "k-hat", "approximation gap", "amortization gap", "active", "PPC"]:
        assert text in report, text
    assert "](trace.png)" in report and "](khat.png)" in report
    numbers = json.loads((out / "diagnostics.json").read_text())
    assert len(numbers["mcmc_datapoints"]) == 3 and numbers["convergence"]["num_transitions"] == 2 * 40
    mcmc, guide = dg.load_netcdf(out / "mcmc.nc"), dg.load_netcdf(out / "guide.nc")
    assert mcmc.posterior["z"].dims == guide.posterior["z"].dims
    assert mcmc.posterior["z"].shape == (2, 40, 3, 2) and guide.posterior["z"].shape == (1, 80, 3, 2)
    np.testing.assert_array_equal(mcmc.posterior["datapoint"].values, numbers["mcmc_datapoints"])
    printed = capsys.readouterr().out
    assert "report:" in printed and ("PASS" in printed or "FAIL" in printed)
    assert main(["diagnose", str(tmp_path / "nothing")]) == 2


def test_diagnose_a_two_layer_run_per_layer_and_says_what_it_skipped(tmp_path):
    """z2 -> z1 -> x: k-hat over both latents, active units per layer, PPC through z1; MCMC and the gaps
    (which read one site z) skipped with the reason."""
    from inference.run import train

    run_dir = tmp_path / "two_layers"
    mlp = {"name": "mlp", "hidden": [16]}
    spec = {"model": {"program": {"name": "hierarchical", "top_latent_dim": 2, "top_hidden": [8]}, "latent_dim": 3,
                      "encoder": mlp, "decoder": mlp},
            "data": {"max_train": 200}, "train": {"epochs": 2, "batch_size": 50}}
    train(spec, run_dir, eval_samples=10, progress=False)
    result = dg.diagnose_run(run_dir, mcmc_points=2, samples=20, warmup=20, gap_points=3, is_samples=30,
                             local_steps=10, ppc_draws=5, rows=20, progress=False)
    numbers = json.loads((run_dir / "diagnostics" / "diagnostics.json").read_text())
    assert set(numbers["skipped"]) == {"mcmc", "gaps"} and "['z1', 'z2']" in numbers["skipped"]["gaps"]
    assert set(result.layers) == {"z1", "z2"} and sum(result.layers.values()) == int(result.active.sum())
    assert result.kl_per_dim.shape == result.active.shape == (3 + 2,)
    assert result.khat.khat.shape == (20,) and result.ppc.loglik_observed.shape[1] == 20
    report = (run_dir / "diagnostics" / "report.md").read_text()
    assert "Active units per layer: z1" in report and "it covers one latent site 'z'" in report


def test_diagnose_refuses_an_m2_run_and_names_evaluate(tmp_path):
    from inference.run import train
    from pyro_vae.errors import ConfigError

    run_dir = tmp_path / "m2"
    mlp = {"name": "mlp", "hidden": [16]}
    spec = {"model": {"program": {"name": "m2", "classes": 10}, "latent_dim": 2, "encoder": mlp, "decoder": mlp},
            "data": {"max_train": 200, "labels": 20}, "train": {"elbo": "enum", "epochs": 1, "batch_size": 50}}
    train(spec, run_dir, eval_samples=4, progress=False)
    with pytest.raises(ConfigError, match="pyro-vae evaluate"):
        dg.diagnose_run(run_dir, mcmc_points=2, gap_points=2, rows=20, progress=False)
    assert not (run_dir / "diagnostics").exists()
