"""benchmarks/row_nuts.py on a tiny setting: both kernels run on the same rows and one ratio is printed per size."""

from __future__ import annotations

import math

from benchmarks.row_nuts import main


def test_the_script_compares_both_kernels_at_each_size(capsys):
    ratios = main(["--points", "6,12", "--draws", "4", "--warmup", "4", "--chains", "1", "--epochs", "1",
                   "--latent-dim", "2"])
    out = capsys.readouterr().out
    assert len(ratios) == 2 and all(math.isfinite(r) and r > 0 for r in ratios)
    for size in (6, 12):
        assert f"{size} rows:" in out
    assert out.count("  nuts    :") == 2 and out.count("  row_nuts:") == 2
    assert out.count("ratio (row_nuts / block ESS per second)") == 2
