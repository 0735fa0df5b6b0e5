"""The benchmark scripts' shared ending: a refused input is one line and status 2, never a traceback."""

from __future__ import annotations

import pytest

from benchmarks._common import run_main
from pyro_vae.errors import ConfigError, TrainingError


def _refused() -> int:
    raise ConfigError("--m1 /nowhere is not a run folder (no config.yaml); train one with `pyro-vae train`")


@pytest.mark.parametrize("main, status", [(lambda: 0, 0), (lambda: 3, 3), (lambda: 1.25, 0), (lambda: None, 0)])
def test_the_status_is_mains_int_and_zero_otherwise(main, status):
    with pytest.raises(SystemExit) as stop:
        run_main(main)
    assert stop.value.code == status


def test_a_refused_input_ends_with_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as stop:
        run_main(_refused)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --m1 /nowhere is not a run folder" in err and "Traceback" not in err


def test_other_errors_are_not_hidden():
    with pytest.raises(ZeroDivisionError):
        run_main(lambda: 1 // 0)
    with pytest.raises(SystemExit):  # a stopped run (NaN) is reported like a refused input
        run_main(lambda: (_ for _ in ()).throw(TrainingError("non-finite loss at epoch 3; lower lr")))
