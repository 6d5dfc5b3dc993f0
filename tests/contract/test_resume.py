"""Every backend resumes: a run SIGKILLed mid-epoch and resumed from its last checkpoint produces
the loss trajectory and validation MAEs of an uninterrupted run, bit for bit, on the CPU."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import checkpoint

RUN = ["train", "--n-prompts", "4", "--d-model", "8", "--n-cycles", "2", "--data", "synthetic:tiny",
       "--epochs", "2", "--max-steps", "24", "--quiet"]
EVERY = 4


def bench_cmd(*args):
    return [sys.executable, "-m", "bench", *args]


def latest_step(directory: Path) -> int:
    try:
        return int((directory / "latest").read_text().strip().split("-")[1])
    except (FileNotFoundError, IndexError, ValueError):
        return -1


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_trajectory(name, tmp_path):
    full_json = tmp_path / "full.json"
    run = subprocess.run(bench_cmd(*RUN, "--backend", name, "--json", str(full_json)), capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    full = json.loads(full_json.read_text())

    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(bench_cmd(*RUN, "--backend", name, "--checkpoint-dir", str(ckpt),
                                      "--checkpoint-every", str(EVERY)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900  # bounds the polling loop only; nothing asserts on time
    while latest_step(ckpt) < 2 * EVERY and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = latest_step(ckpt)
    assert 2 * EVERY <= killed_at < 48 and killed_at % EVERY == 0
    _, _, meta = checkpoint.load_latest(ckpt)
    if killed_at < 24:
        assert meta["epoch"] == 0 and meta["batch_in_epoch"] == killed_at  # mid-epoch

    out = tmp_path / "resumed.json"
    run = subprocess.run(bench_cmd(*RUN, "--backend", name, "--checkpoint-dir", str(ckpt),
                                   "--checkpoint-every", str(EVERY), "--resume", "--json", str(out)),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    assert f"resumed from step {killed_at}" in run.stderr
    resumed = json.loads(out.read_text())
    assert len(resumed["losses"]) == len(full["losses"]) == 48
    assert resumed["losses"] == full["losses"]  # bit-identical
    assert [h["val_mae"] for h in resumed["history"]] == [h["val_mae"] for h in full["history"]]
