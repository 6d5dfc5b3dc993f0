"""A 2-process gloo run in which one rank is SIGKILLed: the survivor must stop with a clear
one-line error within a bounded time, never hang. The ranks are started by hand (the environment
torchrun would set), so no launcher kills the survivor for us: it has to notice by itself."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COLLECTIVE_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "cells"])
def test_killing_one_rank_makes_the_other_exit_with_a_clear_error(mode):
    port = free_port()
    cmd = [sys.executable, "-m", "bench", "time", "--backend", "torch", "--parallel", mode,
           "--data", "synthetic:tiny", "--n-prompts", "8", "--d-model", "16", "--n-cycles", "2",
           "--warmup", "1", "--repeats", "1", "--steps", "1000000", "--opt", f"timeout_s={COLLECTIVE_TIMEOUT_S}"]
    ranks = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        ranks.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    survivor, victim = ranks
    try:
        # Rank 0 announces the timed repeat once both ranks are stepping together.
        deadline = time.time() + 300
        seen = ""
        while "repeat 1/1" not in seen and time.time() < deadline and survivor.poll() is None:
            seen += survivor.stderr.readline()
        assert "repeat 1/1" in seen, seen[-2000:]
        time.sleep(1.0)
        victim.send_signal(signal.SIGKILL)
        # The bound that proves "no hang": wait() raises TimeoutExpired (failing the test) past it.
        survivor.wait(timeout=COLLECTIVE_TIMEOUT_S + 60)
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    err = survivor.stderr.read()
    assert survivor.returncode not in (0, None)
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err, err[-2000:]


@pytest.mark.slow
def test_ranks_time_the_same_number_of_steps_from_a_time_budget():
    """With --seconds each rank estimates its own step time; unless they agree, the rank that
    finishes first leaves the other waiting in an all-reduce."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench", "time", "--backend", "torch", "--parallel", "cells",
           "--data", "synthetic:tiny", "--n-prompts", "8", "--d-model", "16", "--n-cycles", "2",
           "--seconds", "3", "--repeats", "2", "--quiet", "--opt", f"timeout_s={COLLECTIVE_TIMEOUT_S}"]
    ranks = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                   "OMP_NUM_THREADS": "1"})
             for r in range(2)]
    outputs = [p.communicate(timeout=300) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], [err[-1500:] for _, err in outputs]
    assert "samples/s" in outputs[0][0] and outputs[1][0] == ""  # only rank 0 reports
