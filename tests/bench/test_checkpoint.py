"""Checkpoints: atomic, code-free, and a SIGKILLed run resumes onto the uninterrupted trajectory."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import backends
from backends import spec
from bench import checkpoint
from bench.train import supports_checkpoints

RUN = ["train", "--n-prompts", "8", "--d-model", "16", "--n-cycles", "2", "--data", "synthetic:tiny",
       "--epochs", "2", "--max-steps", "30", "--quiet"]
# Backends whose trainers implement state()/load_state(); the kill test runs for each.
RESUMABLE = ["reference", "torch"]


def bench_cmd(*args):
    return [sys.executable, "-m", "bench", *args]


def uninterrupted(backend, tmp_path):
    out = tmp_path / f"{backend}-full.json"
    run = subprocess.run(bench_cmd(*RUN, "--backend", backend, "--json", str(out)), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text())


def latest_step(directory: Path) -> int:
    try:
        return int((directory / "latest").read_text().strip().split("-")[1])
    except (FileNotFoundError, IndexError, ValueError):
        return -1


@pytest.mark.slow
@pytest.mark.parametrize("backend", RESUMABLE)
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_trajectory(backend, tmp_path):
    full = uninterrupted(backend, tmp_path)
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(bench_cmd(*RUN, "--backend", backend, "--checkpoint-dir", str(ckpt),
                                      "--checkpoint-every", "4"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while latest_step(ckpt) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = latest_step(ckpt)
    assert 8 <= killed_at < 60 and killed_at % 4 == 0
    _, _, meta = checkpoint.load_latest(ckpt)
    assert meta["epoch"] == 0 and meta["batch_in_epoch"] == killed_at  # mid-epoch (30 steps per epoch)

    out = tmp_path / "resumed.json"
    run = subprocess.run(bench_cmd(*RUN, "--backend", backend, "--checkpoint-dir", str(ckpt),
                                   "--checkpoint-every", "4", "--resume", "--json", str(out)),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert f"resumed from step {killed_at}" in run.stderr
    resumed = json.loads(out.read_text())
    assert len(resumed["losses"]) == len(full["losses"]) == 60
    assert resumed["losses"] == full["losses"]  # bit-identical on CPU
    assert [h["val_mae"] for h in resumed["history"]] == [h["val_mae"] for h in full["history"]]


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


@pytest.mark.parametrize("name", RESUMABLE)
def test_trainer_state_round_trip_continues_identically(name):
    cfg = spec.TromptConfig(n_columns=984, n_prompts=4, d_model=8, n_cycles=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 984)).astype(np.float32)
    y = rng.normal(size=32).astype(np.float32)
    b = backends.load(name)
    first = b.trainer(spec.init_params(cfg), cfg, x, y)
    first.run([np.arange(8), np.arange(8, 16)])
    saved = first.state()
    first.run([np.arange(16, 24), np.arange(24, 32)])
    second = b.trainer(spec.init_params(cfg, seed=5), cfg, x, y)  # different start, then restored
    second.load_state(saved)
    second.run([np.arange(16, 24), np.arange(24, 32)])
    assert int(saved["step"]) == 2
    assert second.losses() == first.losses()[2:]
    for k, v in first.params().items():
        np.testing.assert_array_equal(second.params()[k], v, err_msg=k)


def test_every_registered_trainer_says_whether_it_can_checkpoint():
    assert supports_checkpoints(backends.load("reference").trainer(
        spec.init_params(spec.TromptConfig(n_columns=3, n_prompts=2, d_model=4, n_cycles=1)),
        spec.TromptConfig(n_columns=3, n_prompts=2, d_model=4, n_cycles=1), np.zeros((4, 3)), np.arange(4.0)))
