"""error_by_labels.py: the records of semi_supervised.py --record summarized per series and drawn."""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks.error_by_labels import main, read_records
from pyro_vae.errors import ConfigError


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def row(labels, draw, method, error, m1=None):
    return {"labels": labels, "draw": draw, "method": method, "m1": m1, "error": error, "protocol": "test"}


def test_series_are_per_method_and_m1_and_a_repeated_draw_keeps_its_last_line(tmp_path):
    first = write(tmp_path / "a.jsonl", [row(100, 0, "labelled-only", 28.0), row(100, 0, "M1+M2", 5.0, "m1_a"),
                                         row(100, 1, "M1+M2", 6.0, "m1_a")])
    second = write(tmp_path / "b.jsonl", [row(100, 0, "labelled-only", 27.0), row(600, 0, "M1+M2", 3.0, "m1_b")])
    table = read_records([first, second], {"m1_b": "VampPrior"})
    assert table["labelled-only"][100] == {0: 27.0}  # b.jsonl came last
    assert table["M1+M2 (M1: m1_a)"][100] == {0: 5.0, 1: 6.0}
    assert table["M1+M2 (M1: VampPrior)"][600] == {0: 3.0}


def test_the_table_prints_the_mean_and_sample_sd_and_the_figure_is_written(tmp_path, capsys):
    records = write(tmp_path / "r.jsonl", [row(100, d, "M1+M2", e, "m1") for d, e in enumerate([5.0, 6.5, 5.5])]
                    + [row(1000, 0, "labelled-only", 12.3)])
    main([str(records), "--out", str(tmp_path / "f.png")])
    out = capsys.readouterr().out
    mean, sd = statistics.fmean([5.0, 6.5, 5.5]), statistics.stdev([5.0, 6.5, 5.5])
    assert f"|    100 |     3 |   {mean:.2f} +- {sd:.2f}" in out
    assert "|   1000 |     1 |  12.30 +- 0.00" in out
    assert (tmp_path / "f.png").stat().st_size > 0


@pytest.mark.parametrize("text, match", [
    ('{"labels": 100, "draw": 0, "method": "M2"}\n', r"r.jsonl:1 is not a record.*fix or remove that line"),
    ('{"labels": "many", "draw": 0, "method": "M2", "error": 1}\n', r"r.jsonl:1 is not a record"),
    ("\n[1, 2]\n", r"r.jsonl:2 is not a record"),
    ("\n", r"hold no records"),
])
def test_a_file_that_is_not_a_record_is_refused_with_its_line(tmp_path, text, match):
    (tmp_path / "r.jsonl").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        read_records([tmp_path / "r.jsonl"])


def test_a_missing_file_and_a_bad_name_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        read_records([tmp_path / "none.jsonl"])
    records = write(tmp_path / "r.jsonl", [row(100, 0, "M2", 12.0)])
    with pytest.raises(ConfigError, match="--name 'm1_mnist' is not M1=TEXT"):
        main([str(records), "--name", "m1_mnist"])


def test_semi_supervised_records_one_line_per_method_run_in_a_draw(tmp_path):
    import argparse

    from benchmarks.semi_supervised import record

    args = argparse.Namespace(epochs=100, patience=30, lr=1e-3, batch_size=100, alpha=None, alpha_per_label=5000.0,
                              monitor=None, m1=str(tmp_path / "m1_run"), m1_units="active", m1_features="mean",
                              max_train=None, skip_m2=True, labelled_batch=100)
    out = {"floor": 28.13, "m2": float("nan"), "seconds": float("nan"), "m1m2": 3.95, "m1m2_seconds": 3267.2,
           "m1m2_kept": 86}
    record(str(tmp_path / "r.jsonl"), 100, 4, out, args)
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["method"], r["m1"], r["error"], r["draw"]) for r in lines] == [
        ("labelled-only", None, 28.13, 4), ("M1+M2", "m1_run", 3.95, 4)]
    assert lines[1]["kept_epoch"] == 86 and lines[1]["seconds"] == 3267
    assert "alpha 5000 x labels" in lines[1]["protocol"] and "M1 units active" in lines[1]["protocol"]
    assert "100 labelled rows per step" in lines[1]["protocol"]
    assert read_records([tmp_path / "r.jsonl"])["M1+M2 (M1: m1_run)"][100] == {4: 3.95}


def test_semi_supervised_refuses_a_record_file_in_a_missing_folder_before_it_loads_anything(tmp_path, capsys):
    from benchmarks.semi_supervised import main as semi_supervised_main

    with pytest.raises(SystemExit) as stop:
        semi_supervised_main(["--record", str(tmp_path / "nowhere" / "r.jsonl")])
    assert stop.value.code == 2 and "--record" in capsys.readouterr().err
