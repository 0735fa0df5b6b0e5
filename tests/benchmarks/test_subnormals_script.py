"""benchmarks/subnormals.py on a tiny model: the sure classifier puts subnormal q(y | x) on the other classes."""

from __future__ import annotations

import pytest
import torch

from benchmarks.subnormals import main, sure_m2

TINY = torch.finfo(torch.float32).tiny


@pytest.mark.parametrize("gap, subnormal", [(20.0, 0), (95.0, 9 * 4)])
def test_the_classifier_puts_e_to_the_minus_gap_on_every_other_class(gap, subnormal):
    program = sure_m2(data_dim=3, hidden=8, gap=gap)
    q = program.classify(torch.randn(4, 3)).probs.detach()
    assert int(((q > 0) & (q < TINY)).sum()) == subnormal
    expected = -torch.logaddexp(torch.tensor(gap), torch.tensor(9.0).log())  # log q(k) = -log(e^gap + 9), k > 0
    torch.testing.assert_close(q[:, 1:].log(), expected.expand(4, 9), rtol=0, atol=1e-3)


def test_the_script_prints_one_ratio_per_gap(capsys):
    main(["--gaps", "20,95", "--steps", "1", "--repeats", "1", "--rows", "4", "--data-dim", "3", "--hidden", "8"])
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("gap 20 nats (0 of 40 q(y | x) subnormal)") and "ratio flushed / not" in out[1]
    assert out[2].startswith("gap 95 nats (36 of 40 q(y | x) subnormal)")
