"""Test error against the number of labels, from the JSON lines that ``semi_supervised.py --record`` appends.

Each line is one method run on one label draw: ``labels``, ``draw``, ``method`` (labelled-only, M2,
M1+M2), ``m1`` (the M1 run folder's name, for M1+M2), ``error`` (test error, %), ``protocol``.
One series per method and M1; at each label count the mean and the sample standard deviation over
its draws,

    mean = (1/n) sum_d e_d,   sd = sqrt( sum_d (e_d - mean)^2 / (n - 1) )   (0 for one draw),

with the published anchors drawn dashed (Kingma et al. 2014 Table 1, M1+M2 and M2; Pyro's ss_vae_M2
example as 100 - accuracy). A draw recorded twice for the same series keeps its last line. Prints the
table it draws.

    python benchmarks/error_by_labels.py docs/results/semi_supervised.jsonl [more.jsonl ...] \\
        --out docs/figures/m1m2_error_by_labels.png [--name m1_mnist="N(0, I) prior" ...]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_main  # noqa: E402

from pyro_vae.errors import ConfigError  # noqa: E402

PAPER_M2 = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}
PAPER_M1M2 = {100: 3.33, 600: 2.59, 1000: 2.40, 3000: 2.18}
PYRO_ACCURACY = {100: 93.19, 600: 94.37, 1000: 94.87, 3000: 95.82}
FIELDS = ("labels", "draw", "method", "error")


def read_records(paths: list[Path], names: dict[str, str] | None = None) -> dict[str, dict[int, dict[int, float]]]:
    """series name -> label count -> draw -> test error (%), the last line winning for a repeated draw;
    ``names`` renames M1 run folders in the series names."""
    table: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ConfigError(f"record file {str(path)!r} cannot be read ({err.strerror}); pass a file written by "
                              "semi_supervised.py --record") from None
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                labels, draw, error = int(row["labels"]), int(row["draw"]), float(row["error"])
                method, m1 = str(row["method"]), row.get("m1")
            except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError):
                raise ConfigError(f"{path}:{i} is not a record of semi_supervised.py --record (a JSON object with "
                                  f"{', '.join(FIELDS)}: integers, a name, a number); fix or remove that line") from None
            name = method + (f" (M1: {(names or {}).get(m1, m1)})" if m1 else "")
            table[name][labels][draw] = error
    if not table:
        raise ConfigError(f"the record files {[str(p) for p in paths]} hold no records; run semi_supervised.py --record")
    return table


def summarize(errors: dict[int, float]) -> tuple[float, float]:
    """(mean, sample sd) over the draws (module docstring); sd 0 for one draw."""
    values = list(errors.values())
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help="the PNG to write (default: only the table)")
    p.add_argument("--linear", action="store_true", help="a linear error axis (default: logarithmic)")
    p.add_argument("--name", action="append", default=[], metavar="M1=TEXT",
                   help="call the M1 run folder M1 TEXT in the table and figure (repeatable)")
    args = p.parse_args(argv)
    for item in args.name:
        if "=" not in item:
            raise ConfigError(f"--name {item!r} is not M1=TEXT; write e.g. --name m1_mnist='N(0, I) prior'")
    names = dict(item.split("=", 1) for item in args.name)
    table = read_records(args.records, names)
    labels = sorted({n for per_label in table.values() for n in per_label})
    series = {}
    width = max(len(name) for name in table)
    print(f"{'series':{width}s} | labels | draws | test error % mean +- sd")
    for name in sorted(table):
        means, sds = [], []
        for n in labels:
            mean, sd = summarize(table[name][n]) if table[name].get(n) else (math.nan, math.nan)
            means.append(mean)
            sds.append(sd)
            if math.isfinite(mean):
                print(f"{name:{width}s} | {n:6d} | {len(table[name][n]):5d} | {mean:6.2f} +- {sd:4.2f}")
        series[name] = (means, sds)
    if args.out:
        from pyro_vae.plots.classes import plot_error_by_labels

        refs = {"paper M1+M2": [PAPER_M1M2.get(n, math.nan) for n in labels],
                "paper M2": [PAPER_M2.get(n, math.nan) for n in labels],
                "Pyro's ss_vae_M2 example": [100 - PYRO_ACCURACY[n] if n in PYRO_ACCURACY else math.nan for n in labels]}
        out = plot_error_by_labels(labels, series, args.out, "MNIST test error against the number of labels",
                                   references=refs, log_error=not args.linear)
        print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
