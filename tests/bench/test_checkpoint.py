"""Checkpoint files: atomic, code-free, damage reported in one line; a resume refuses another run.
(The SIGKILL-and-resume test of every backend is in tests/contract/test_resume.py.)"""

import subprocess
import sys

import numpy as np
import pytest

from bench import checkpoint

RUN = ["train", "--n-prompts", "8", "--d-model", "16", "--n-cycles", "2", "--data", "synthetic:tiny",
       "--epochs", "2", "--max-steps", "30", "--quiet"]


def bench_cmd(*args):
    return [sys.executable, "-m", "bench", *args]


def test_resume_refuses_another_run(tmp_path):
    run = subprocess.run(bench_cmd(*RUN, "--backend", "reference", "--max-steps", "2", "--epochs", "1",
                                   "--checkpoint-dir", str(tmp_path)), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    other = subprocess.run(bench_cmd(*RUN, "--backend", "reference", "--max-steps", "2", "--epochs", "1",
                                     "--seed", "1", "--checkpoint-dir", str(tmp_path), "--resume"),
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "another run: seed was 0, now 1" in other.stderr
    assert other.stderr.strip().count("\n") == 0


def test_checkpoint_files_hold_no_pickle_and_are_replaced_atomically(tmp_path):
    state = {"param/w": np.arange(6.0).reshape(2, 3), "step": np.array(3)}
    for step in (4, 8, 12):
        checkpoint.save(tmp_path, state, [0.5] * step, {"global_step": step, "epoch": 0})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["latest", "step-00000008", "step-00000012"]  # the two newest kept, no temp dirs
    with np.load(tmp_path / "step-00000012" / "state.npz", allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
    loaded, losses, meta = checkpoint.load_latest(tmp_path)
    np.testing.assert_array_equal(loaded["param/w"], state["param/w"])
    assert losses == [0.5] * 12 and meta["global_step"] == 12


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "latest").unlink(), "no checkpoint"),
    (lambda d: (d / "latest").write_text("../../etc\n"), "malformed"),
    (lambda d: (d / "step-00000004" / "meta.json").write_text("{"), "not valid JSON"),
    (lambda d: (d / "step-00000004" / "state.npz").write_bytes(b"garbage"), "unreadable"),
    (lambda d: (d / "step-00000004" / "state.npz").unlink(), "missing state.npz"),
])
def test_damaged_checkpoints_give_one_line_errors(tmp_path, damage, message):
    checkpoint.save(tmp_path, {"step": np.array(1)}, [1.0], {"global_step": 4, "epoch": 0})
    damage(tmp_path)
    with pytest.raises(ValueError, match=message) as info:
        checkpoint.load_latest(tmp_path)
    assert "\n" not in str(info.value)


def test_a_non_finite_loss_stops_the_run_at_that_step_keeping_the_last_good_checkpoint(tmp_path):
    # 40 rows, 4 columns; batch 4 of epoch 0 (rows 32, 25, 19, ...) holds a value whose float32
    # LayerNorm overflows: its loss is NaN, the three steps before it are fine.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype(np.float32), rng.normal(size=40).astype(np.float32)
    x[32, 1] = 3e38
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "train.npz", X=x, Y=y)
    np.savez(data / "val.npz", X=x[:8], Y=y[:8])
    ckpt = tmp_path / "ckpt"
    run = subprocess.run(bench_cmd("train", "--backend", "torch", "--data", str(data), "--n-prompts", "2",
                                   "--d-model", "4", "--n-cycles", "1", "--epochs", "1", "--quiet",
                                   "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 3, run.stderr
    assert run.stderr.strip().count("\n") == 0
    assert "training loss became nan at epoch 1, step 4 of the epoch (step 4 of the run)" in run.stderr
    state, losses, meta = checkpoint.load_latest(ckpt)
    assert meta["global_step"] == 3 and len(losses) == 3 and np.all(np.isfinite(losses))
