"""Checkpoint directories: one run at a time, another run's checkpoints are never lost, `latest` always
names a checkpoint, files get the umask's mode, and impossible epoch counts are refused."""

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backends import spec
from backends.data import load_dataset
from bench import checkpoint
from bench.cli import main
from bench.train import train

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train", "--backend", "torch", "--data", "synthetic:tiny", "--n-prompts", "4", "--d-model", "8",
        "--n-cycles", "2", "--quiet"]


def run_cli(capsys, *args) -> tuple[int, str]:
    """`python -m bench <TINY> <args>` in this process: (exit code, stderr)."""
    capsys.readouterr()
    try:
        code = main([*TINY, *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def run_train(directory: Path, **kwargs) -> dict:
    """bench.train.train on the tiny data and model, in this process."""
    dataset = load_dataset("synthetic:tiny", seed=kwargs.get("seed", spec.SEED))
    cfg = spec.TromptConfig(n_columns=dataset.n_columns, n_prompts=4, d_model=8, n_cycles=2)
    return train("torch", "cpu", "float32", dataset, cfg, progress=False,
                 checkpoint_dir=directory and str(directory), **kwargs)


def bench_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "bench", *TINY, *args]


def snapshot(directory: Path) -> dict[str, str]:
    """Every checkpoint file (not the lock) and a digest of its bytes."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != checkpoint.LOCK_NAME}


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != checkpoint.LOCK_NAME)


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Poll (bounded) until `path` exists; fail if the process ends first."""
    for _ in range(6000):
        if path.exists():
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "the process ended"
        time.sleep(0.05)
    pytest.fail(f"{path} did not appear")


def test_another_runs_directory_is_refused_and_nothing_is_lost(tmp_path, capsys):
    code, err = run_cli(capsys, "--max-steps", "6", "--epochs", "2", "--checkpoint-dir", str(tmp_path),
                        "--checkpoint-every", "4")
    assert code == 0, err
    before = snapshot(tmp_path)
    assert entries(tmp_path) == ["latest", "step-00000008", "step-00000012"]

    for extra in ([], ["--checkpoint-every", "1"]):
        code, err = run_cli(capsys, "--max-steps", "6", "--epochs", "2", "--seed", "1",
                            "--checkpoint-dir", str(tmp_path), *extra)
        assert code == 2
        assert err == (f"error: checkpoint directory {tmp_path} already holds checkpoints (latest: "
                       "step-00000012); pass --resume to continue that run or --overwrite to replace them\n")
    assert snapshot(tmp_path) == before
    assert checkpoint.load_latest(tmp_path)[2]["seed"] == 0


def test_step_folders_without_latest_also_count_as_checkpoints(tmp_path):
    (tmp_path / "step-00000004").mkdir()
    with pytest.raises(ValueError, match=r"already holds checkpoints \(no 'latest' file\)"):
        with checkpoint.open_run(tmp_path):
            pass
    assert (tmp_path / "step-00000004").is_dir()
    with checkpoint.open_run(tmp_path / "fresh") as d:  # a missing or empty directory is fine
        assert entries(d) == []


def test_overwrite_replaces_another_runs_checkpoints(tmp_path):
    run_train(tmp_path, max_steps=6, epochs=2, checkpoint_every=4)
    assert entries(tmp_path) == ["latest", "step-00000008", "step-00000012"]
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    out = run_train(tmp_path, max_steps=5, epochs=1, seed=1, overwrite=True)
    assert entries(tmp_path) == ["latest", "notes.txt", "step-00000005"]  # only the new run's checkpoint
    _, losses, meta = checkpoint.load_latest(tmp_path)
    assert meta["seed"] == 1 and meta["global_step"] == 5 and losses == out["losses"]

    with pytest.raises(ValueError, match="^--resume and --overwrite exclude each other") as info:
        run_train(tmp_path, max_steps=5, epochs=2, seed=1, overwrite=True, resume=True)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="^--checkpoint-every, --resume and --overwrite need --checkpoint-dir$"):
        run_train(None, max_steps=5, overwrite=True)
    assert entries(tmp_path) == ["latest", "notes.txt", "step-00000005"]


def test_prune_never_deletes_what_latest_names(tmp_path):
    state = {"step": np.array(1)}
    for step in (350, 387):  # another run's, higher step numbers (saved without the directory checks)
        checkpoint.save(tmp_path, state, [0.0] * step, {"global_step": step, "epoch": 2, "seed": 9})
    for step in (43, 86, 129):
        checkpoint.save(tmp_path, state, [1.0] * step, {"global_step": step, "epoch": 0, "seed": 0})
        _, losses, meta = checkpoint.load_latest(tmp_path)
        assert meta["global_step"] == step and meta["seed"] == 0 and len(losses) == step
    # This run's two newest are kept, latest among them; the higher foreign ones are not this run's to prune.
    assert entries(tmp_path) == ["latest", "step-00000086", "step-00000129", "step-00000350", "step-00000387"]
    assert (tmp_path / "latest").read_text() == "step-00000129\n"


def test_second_run_is_refused_while_the_first_holds_the_directory(tmp_path):
    ckpt = tmp_path / "ckpt"
    first = subprocess.Popen(bench_cmd("--epochs", "1000", "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(ckpt / "latest", first)
        in_use = f"checkpoint directory {ckpt} is in use by another run (pid {first.pid})"
        second = subprocess.run(bench_cmd("--epochs", "1", "--seed", "1", "--checkpoint-dir", str(ckpt),
                                          "--checkpoint-every", "1"),
                                cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert second.returncode == 2, second.stderr
        assert second.stderr == f"error: {in_use}\n"
        for flags in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(ValueError) as info:
                run_train(ckpt, max_steps=2, epochs=1, seed=1, checkpoint_every=1, **flags)
            assert str(info.value) == in_use
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # The first run's checkpoints are all there: latest and the one before it (the kill may have
    # landed between a save and its prune, or between a folder's rename and the new `latest`).
    _, losses, meta = checkpoint.load_latest(ckpt)
    step = meta["global_step"]
    assert meta["seed"] == 0 and len(losses) == step >= 1
    kept = {int(p.name.removeprefix("step-")) for p in ckpt.glob("step-*")}
    assert {max(1, step - 1), step} <= kept <= set(range(step - 2, step + 2))
    with checkpoint.open_run(ckpt, resume=True):  # the first run can continue; half-saves are swept
        assert not [p for p in ckpt.iterdir() if p.name.startswith(".") and p.name != checkpoint.LOCK_NAME]
        assert checkpoint.load_latest(ckpt)[2]["global_step"] == step


def test_a_sigkilled_lock_holder_does_not_block_the_next_run(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom bench import checkpoint\n"
         "with checkpoint.lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(ValueError) as info:
            with checkpoint.lock(tmp_path):
                pass
        assert str(info.value) == f"checkpoint directory {tmp_path} is in use by another run (pid {holder.pid})"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    code, err = run_cli(capsys, "--max-steps", "3", "--epochs", "1", "--checkpoint-dir", str(tmp_path))
    assert code == 0, err
    assert checkpoint.load_latest(tmp_path)[2]["global_step"] == 3
    assert (tmp_path / checkpoint.LOCK_NAME).read_text() == ""  # released: no holder recorded


def test_leftovers_of_a_killed_save_are_removed_under_the_lock(tmp_path):
    checkpoint.save(tmp_path, {"step": np.array(1)}, [1.0] * 4, {"global_step": 4, "epoch": 0})
    (tmp_path / ".step-00000008.x1y2").mkdir()
    (tmp_path / ".step-00000008.x1y2" / "state.npz").write_bytes(b"half")
    (tmp_path / ".latest.abc.tmp").write_text("step-00000008\n")
    with checkpoint.open_run(tmp_path, resume=True):
        assert entries(tmp_path) == ["latest", "step-00000004"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    script = (f"import os, sys\nos.umask({umask:#o})\nimport numpy as np\nfrom bench import checkpoint\n"
              "with checkpoint.open_run(sys.argv[1]):\n"
              "    checkpoint.save(sys.argv[1], {'step': np.array(1)}, [1.0], {'global_step': 1, 'epoch': 0})\n")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ckpt")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    ckpt = tmp_path / "ckpt"
    for name in ("step-00000001/meta.json", "step-00000001/state.npz", "latest", checkpoint.LOCK_NAME):
        assert oct((ckpt / name).stat().st_mode & 0o777) == oct(mode), name
    assert oct((ckpt / "step-00000001").stat().st_mode & 0o777) == oct(0o777 & ~umask)


def test_epochs_must_be_at_least_one(tmp_path, capsys):
    for epochs in (0, -1):
        with pytest.raises(ValueError, match=f"^--epochs must be >= 1, got {epochs}$"):
            run_train(tmp_path, max_steps=2, epochs=epochs)
    code, err = run_cli(capsys, "--max-steps", "2", "--epochs", "0", "--checkpoint-dir", str(tmp_path))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "--epochs" in err and "must be >= 1, got 0" in err
    assert entries(tmp_path) == []


def test_resuming_with_no_more_epochs_than_the_checkpoint_is_refused(tmp_path, capsys):
    code, err = run_cli(capsys, "--max-steps", "3", "--epochs", "2", "--checkpoint-dir", str(tmp_path),
                        "--checkpoint-every", "1")
    assert code == 0, err
    before = snapshot(tmp_path)
    for epochs in ("2", "1"):
        code, err = run_cli(capsys, "--max-steps", "3", "--epochs", epochs, "--checkpoint-dir", str(tmp_path),
                            "--checkpoint-every", "1", "--resume")
        assert code == 2
        assert err == (f"error: the checkpoint in {tmp_path} is at epoch 2 of a 2-epoch run; --epochs must be "
                       f"larger than 2 to continue it (got {epochs})\n")
    assert snapshot(tmp_path) == before

    out = tmp_path.parent / f"{tmp_path.name}-resumed.json"
    code, err = run_cli(capsys, "--max-steps", "3", "--epochs", "3", "--checkpoint-dir", str(tmp_path),
                        "--checkpoint-every", "1", "--resume", "--json", str(out))
    assert code == 0 and err == "resumed from step 6 (epoch 3, batch 0)\n"
    result = json.loads(out.read_text())
    assert result["epochs"] == 3 and [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert len(result["losses"]) == 9
    assert checkpoint.load_latest(tmp_path)[2]["global_step"] == 9

