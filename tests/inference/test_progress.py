"""Progress off a terminal: plain lines, throttled, with a last line; silent for short work."""

from types import SimpleNamespace

import pytest

from inference import progress
from inference.progress import LogLines, bar


@pytest.fixture(autouse=True)
def in_a_log(monkeypatch):
    """stderr is a log file, not a terminal (also under ``pytest -s``)."""
    monkeypatch.setattr(progress, "interactive", lambda: False)


@pytest.fixture
def clock(monkeypatch):
    """A settable clock for the progress module only (``time.monotonic`` elsewhere untouched)."""
    now = [100.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_off_a_terminal_bar_gives_log_lines(monkeypatch):
    assert isinstance(bar(range(3), desc="x"), LogLines)
    assert not isinstance(bar(range(3), desc="x", log_lines=False), LogLines)
    assert not isinstance(bar(range(3), enabled=False), LogLines)
    monkeypatch.setattr(progress, "interactive", lambda: True)
    on_terminal = bar(range(3), desc="x", every=5.0)
    assert not isinstance(on_terminal, LogLines) and not on_terminal.disable  # a live tqdm bar
    on_terminal.close()


def test_short_work_prints_nothing(capsys, clock):
    assert list(bar(range(5), desc="quick")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""


def test_lines_are_throttled_and_say_how_far_and_how_long(capsys, clock):
    lines = LogLines(desc="log p(x)", total=10, unit="chunk", every=60.0)
    for t in range(10):  # one chunk every 25 s: a line at 75 s (3 done), 150 s (6 done), 225 s (9 done), then the last
        clock[0] += 25.0
        lines.update(1)
    lines.close()
    lines.close()  # idempotent
    lines.update(1)  # nothing after close
    out = capsys.readouterr().err.splitlines()
    assert out == ["log p(x): 3/10 chunk (30 %), 75 s, ~175 s left",
                   "log p(x): 6/10 chunk (60 %), 150 s, ~100 s left",
                   "log p(x): 9/10 chunk (90 %), 225 s, ~25 s left",
                   "log p(x): 10/10 chunk (100 %), 250 s"]
    assert all("\r" not in line for line in out)


def test_iteration_counts_from_initial_and_keeps_the_postfix(capsys, clock):
    lines = LogLines(range(4), desc="fit", total=8, initial=4, every=10.0)
    lines.set_postfix(loss="1.5")
    for _ in lines:
        clock[0] += 20.0
    out = capsys.readouterr().err.splitlines()
    assert out[0] == "fit: 5/8 it (62 %), 20 s, ~60 s left, loss=1.5"  # the rate counts only this session's work
    assert out[-1] == "fit: 8/8 it (100 %), 80 s, loss=1.5"
    assert len(out) == 4  # the close adds no copy of a line already printed


def test_unknown_total_still_reports(capsys, clock):
    lines = LogLines(iter([1, 2]), desc="draws", every=1.0)
    for _ in lines:
        clock[0] += 2.0
    assert capsys.readouterr().err.splitlines()[0] == "draws: 1 it, 2 s"


def test_an_importance_sampled_evaluation_reports_in_a_log(capsys, clock, monkeypatch):
    """The evaluator's chunks reach the log when they take long (here: a clock 100 s per reading)."""
    import torch

    from inference.evaluate import log_likelihood
    from pyro_vae import build_vae

    def tick():
        clock[0] += 100.0
        return clock[0]

    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=tick))
    vae = build_vae(data_dim=6, latent_dim=2, seed=0)
    x = torch.rand(10, 6).round()
    log_likelihood(vae.model, vae.guide, x, num_samples=8, batch_size=5, particle_batch=4, progress=True)
    out = capsys.readouterr().err.splitlines()
    assert out == ["log p(x): 1/4 chunk (25 %), 100 s, ~300 s left", "log p(x): 2/4 chunk (50 %), 200 s, ~200 s left",
                   "log p(x): 3/4 chunk (75 %), 300 s, ~100 s left", "log p(x): 4/4 chunk (100 %), 400 s"]


@pytest.mark.parametrize("method, first_line", [("row_nuts", "per-row NUTS: 1/5 transition (20 %), 100 s, ~400 s left"),
                                                ("local_vi", None)])
def test_completion_by_inference_reports_in_a_log_and_draws_the_same(capsys, monkeypatch, method, first_line):
    """``progress=True`` on a slow clock prints the long methods' lines; the completions are those of a silent run."""
    import torch

    from inference.completion.samplers import complete_by_inference
    from pyro_vae import build_vae
    from pyro_vae.observation import ObservedPart

    vae = build_vae(data_dim=6, latent_dim=2, seed=0)
    x, mask = torch.rand(4, 6).round(), torch.tensor([True, True, True, False, False, False])
    kwargs = dict(method=method, num_samples=2, warmup=3, proposals=10, seed=1)
    silent = complete_by_inference(ObservedPart(vae, mask), x, **kwargs)
    assert capsys.readouterr().err == ""
    clock = [0.0]

    def tick():
        clock[0] += 100.0
        return clock[0]

    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=tick))
    shown = complete_by_inference(ObservedPart(vae, mask), x, progress=True, **kwargs)
    out = capsys.readouterr().err.splitlines()
    assert out and all("\r" not in line for line in out)
    if first_line is not None:
        assert out[0] == first_line
    torch.testing.assert_close(shown.means, silent.means, rtol=0, atol=0)
