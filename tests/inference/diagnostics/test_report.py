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
