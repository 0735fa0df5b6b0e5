"""Run folders lose nothing: a refused resume writes nothing, one process at a time, no silent overwrite, no resume on changed data."""

from __future__ import annotations

import fcntl
import shutil

import numpy as np
import pytest

from inference.run import train
from inference.training.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.errors import ConfigError

SPEC = {"model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}},
        "train": {"epochs": 1, "batch_size": 200}}


def tiny(**train):
    return {**SPEC, "train": {**SPEC["train"], **train}}


def snapshot(run_dir):
    """Every file of the folder and its bytes."""
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture()
def finished(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny(), run_dir, eval_samples=5, progress=False)
    return run_dir


@pytest.mark.parametrize("change", [{"train": {"seed": 1}}, {"model": {"latent_dim": 3}}, {"train": {"lr": 0.5}}])
def test_a_refused_resume_writes_nothing(finished, change):
    before = snapshot(finished)
    spec = {**tiny(epochs=2), "model": {**SPEC["model"], **change.get("model", {})}}
    spec["train"] = {**spec["train"], **change.get("train", {})}
    with pytest.raises(ConfigError, match="cannot resume"):
        train(spec, finished, resume=True, eval_samples=5, progress=False)
    assert snapshot(finished) == before
    again = train(None, finished, resume=True, eval_samples=5, progress=False)  # the saved config still resumes
    assert again.fit.history[-1].epoch == 1


def test_a_checkpoint_written_before_a_setting_existed_resumes_under_its_default(finished):
    """A checkpoint that does not record train.weight_decay (it predates it) was trained with none: it resumes
    with the default 0, and is refused (before anything is written) with another value."""
    for name in ("last.pt", "best.pt"):
        path = finished / "checkpoints" / name
        state = load_checkpoint(path)
        del state["spec"]["weight_decay"]
        save_checkpoint(path, {k: v for k, v in state.items() if k != "checksum"})
    before = snapshot(finished)
    with pytest.raises(ConfigError, match="weight_decay: 0.0 -> 0.1"):
        train(tiny(epochs=2, weight_decay=0.1), finished, resume=True, eval_samples=5, progress=False)
    assert snapshot(finished) == before
    assert train(tiny(epochs=2), finished, resume=True, eval_samples=5, progress=False).fit.history[-1].epoch == 2


def test_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / ".lock"
    with open(lock, "a+") as held:  # another process training into the folder holds the OS lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="in use"):
            train(tiny(), run_dir, eval_samples=5, progress=False)
        assert not (run_dir / "config.yaml").exists()
    lock.write_text("pid 999999 (a process that died)")  # the file is there, nobody holds it
    assert train(tiny(), run_dir, eval_samples=5, progress=False).fit.history


def test_a_folder_holding_a_run_is_not_overwritten_without_being_asked(tmp_path, finished):
    (finished / "checkpoints" / "last.pt").unlink()  # best.pt and metrics.json remain
    before = snapshot(finished)
    with pytest.raises(ConfigError, match="already holds a run.*--overwrite"):
        train(tiny(), finished, eval_samples=5, progress=False)
    assert snapshot(finished) == before
    result = train(tiny(), finished, overwrite=True, eval_samples=5, progress=False)
    assert (finished / "checkpoints" / "last.pt").is_file() and result.fit.history[-1].epoch == 1


def test_resume_on_data_with_other_values_is_refused_unless_allowed(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rows.npy"
    np.save(path, rng.random((120, 6)).round())
    spec = {**tiny(batch_size=42), "data": {"dataset": str(path), "binarize": "none"}}  # 84 training rows
    run_dir = tmp_path / "run"
    train(spec, run_dir, eval_samples=5, progress=False)
    np.save(path, rng.random((120, 6)).round())  # same shape, other contents
    longer = {**spec, "train": {**spec["train"], "epochs": 2}}
    with pytest.raises(ConfigError, match="same shape but other values"):
        train(longer, run_dir, resume=True, eval_samples=5, progress=False)
    assert train(longer, run_dir, resume=True, allow_data_change=True, eval_samples=5,
                 progress=False).fit.history[-1].epoch == 2


def corrupt_tensor_bytes(path):
    """Flip bytes inside a stored tensor of a torch.save zip (the archive itself stays readable)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if "/data/" in n]
        info = z.getinfo(max(names, key=lambda n: z.getinfo(n).file_size))
    raw = bytearray(path.read_bytes())
    h = info.header_offset  # the local header's own name and extra lengths (the extra field pads for alignment)
    offset = h + 30 + int.from_bytes(raw[h + 26:h + 28], "little") + int.from_bytes(raw[h + 28:h + 30], "little")
    for i in range(offset, offset + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_corrupt_or_stale_best_checkpoint_falls_back_to_last(tmp_path, caplog):
    """Evaluate and sample read the best state from last.pt, which carries it: a corrupt best.pt or one left
    stale by a crash between the two writes changes nothing, and the run says what it used."""
    from inference.run import load_run
    from inference.training import load_checkpoint

    run_dir = tmp_path / "run"
    train(tiny(epochs=3), run_dir, eval_samples=5, progress=False)
    _, _, reference = load_run(run_dir)
    best = run_dir / "checkpoints" / "best.pt"
    corrupt_tensor_bytes(best)
    with pytest.raises(Exception, match="checksum"):
        load_checkpoint(best)
    _, _, vae = load_run(run_dir)
    for k, v in reference.state_dict().items():
        assert (v == vae.state_dict()[k]).all(), k
    corrupt_tensor_bytes(run_dir / "checkpoints" / "last.pt")  # now the only whole file is the (corrupt) best...
    with pytest.raises(Exception, match="corrupt"):
        load_run(run_dir)


def test_eval_rows_scores_a_prefix_of_the_test_split_and_times_it(tmp_path):
    result = train(tiny(), tmp_path / "run", eval_samples=5, eval_rows=20, progress=False)
    test = result.metrics["test"]
    assert test["log_likelihood"]["n"] == 20 and test["seconds"] > 0
    with pytest.raises(ConfigError, match="eval_rows must be a positive integer"):
        train(tiny(), tmp_path / "other", eval_rows=0, progress=False)
    assert not (tmp_path / "other").exists()


def test_a_run_exports_to_one_file_that_loads_without_the_folder(tmp_path):
    import shutil

    import torch

    from inference.run import export_run, load_run
    from pyro_vae.export import load_program

    run_dir = tmp_path / "run"
    train(tiny(), run_dir, eval_samples=5, progress=False)
    spec, data, program = load_run(run_dir)
    path = export_run(run_dir, tmp_path / "model.pt")
    shutil.rmtree(run_dir)
    loaded, recipe = load_program(path)
    assert recipe["dataset"] == "digits" and recipe["feature_dim"] == 64 and recipe["image_shape"] == [8, 8]
    for k, v in program.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = data.test[:5].round()
    torch.testing.assert_close(loaded.decode(loaded.posterior(x).mean).log_prob(x),
                               program.decode(program.posterior(x).mean).log_prob(x))


def test_tensorboard_gets_every_epoch_and_sample_grids(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run_dir = tmp_path / "run"
    train(tiny(epochs=3), run_dir, eval_samples=5, tensorboard=True, progress=False)
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()
    assert {"elbo/train", "elbo/validation", "schedule/lr", "stats/val_kl", "stats/val_reconstruction"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("elbo/train")] == [1, 2, 3]
    assert "samples" in tags["images"]


def test_tensorboard_without_the_package_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match=r"pip install 'pyro-vae\[tensorboard\]'"):
        train(tiny(), tmp_path / "run", tensorboard=True, progress=False)
    assert not (tmp_path / "run").exists()


def test_every_file_of_a_run_is_an_ordinary_file(tmp_path):
    """Atomic writes go through temporary files (mode 0600): what lands must have the ordinary mode 0644,
    metrics.json included, and no temporary file may remain."""
    import stat

    run_dir = tmp_path / "run"
    train(tiny(), run_dir, eval_samples=5, progress=False)
    written = [p for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"]
    assert {"config.yaml", "metrics.json", "report.md", "last.pt", "best.pt"} <= {p.name for p in written}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        assert not path.name.endswith(".tmp"), path


def test_overwrite_removes_the_old_tensorboard_logs_too(tmp_path):
    """TensorBoard logs belong to the run: they count as a run in the folder, and --overwrite removes them,
    so the new run's curves are not drawn over the old run's."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run_dir = tmp_path / "run"
    train(tiny(epochs=2), run_dir, eval_samples=5, tensorboard=True, progress=False)
    for name in ("config.yaml", "metrics.json", "report.md"):
        (run_dir / name).unlink()
    for name in ("checkpoints", "figures"):
        shutil.rmtree(run_dir / name)
    with pytest.raises(ConfigError, match="already holds a run"):  # only the logs are left: still a run
        train(tiny(), run_dir, eval_samples=5, progress=False)
    train(tiny(), run_dir, overwrite=True, eval_samples=5, tensorboard=True, progress=False)
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("elbo/train")] == [1]
