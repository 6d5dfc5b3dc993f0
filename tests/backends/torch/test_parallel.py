"""Both multi-process modes of backends/torch/parallel.py, run for real: two gloo processes on the
CPU under torchrun, compared with single-process training of the same batches.

The problem (parallel.selfcheck_problem) starts with a one-row batch, so under ddp one rank has an
empty slice: the global-batch arithmetic must still give the single-device update, and the
gradients the run reports on that batch must be the single-device ones. Mid-run, a second trainer
loads the first one's state (collective under cells) and must then take bit-identical steps.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import backends  # noqa: E402
from backends import spec  # noqa: E402
from backends.torch.parallel import selfcheck_problem  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
STEPS = 5
RESUME_AT = 2
LAUNCH_TIMEOUT_S = 240  # two fresh torch processes on a busy 2-core box; a hang would exceed it


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "backends.torch.parallel", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)


@pytest.fixture(scope="module")
def single_process() -> tuple[list[float], dict[str, np.ndarray], tuple[float, dict[str, np.ndarray]]]:
    cfg, params, x, y, batches = selfcheck_problem(STEPS)
    trainer = backends.load("torch", dtype="float32").trainer(params, cfg, x, y)
    trainer.run(batches)
    return trainer.losses(), trainer.params(), trainer.gradients(batches[0])


@pytest.mark.slow
@pytest.mark.xdist_group("torch_parallel")
@pytest.mark.parametrize("mode, ddp_impl", [("ddp", "torch"), ("ddp", "flat"), ("cells", "torch")])
def test_two_gloo_ranks_equal_single_process(mode, ddp_impl, single_process, tmp_path):
    """ddp_impl=torch is DistributedDataParallel (its rank with the empty slice runs a zero-weight
    row); flat is one all-reduce after the backward. cells ignores ddp_impl."""
    out = tmp_path / f"{mode}.npz"
    done = torchrun("--mode", mode, "--ddp-impl", ddp_impl, "--steps", str(STEPS), "--resume-at", str(RESUME_AT),
                    "--out", str(out))
    assert done.returncode == 0, done.stderr[:3000]  # the ranks' own errors come first
    result = np.load(out)
    losses, params, (grad_loss, grads) = single_process
    # float32 noise: the ranks sum partial gradients in a different order than one process.
    np.testing.assert_allclose(result["losses"], losses, rtol=1e-5, atol=1e-7)
    for name, value in params.items():
        np.testing.assert_allclose(result[f"p:{name}"], value, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(result["grad_loss"], grad_loss, rtol=1e-5)
    for name, value in grads.items():
        np.testing.assert_allclose(result[f"g:{name}"], value, rtol=1e-4, atol=1e-6 * np.abs(value).max(),
                                   err_msg=name)
    cfg = selfcheck_problem(STEPS)[0]
    for prefix in ("p:", "g:", "t:"):
        assert set(spec.param_names(cfg)) == {k[2:] for k in result.files if k.startswith(prefix)}
    # The resumed trainer, in the same process group, continues exactly.
    np.testing.assert_array_equal(result["twin_losses"], result["losses"][RESUME_AT:])
    for name in params:
        np.testing.assert_array_equal(result[f"t:{name}"], result[f"p:{name}"], err_msg=name)


@pytest.mark.slow
@pytest.mark.xdist_group("torch_parallel")
def test_a_dead_rank_stops_the_run_instead_of_hanging():
    done = torchrun("--mode", "cells", "--steps", str(STEPS), "--die-rank", "1", "--die-step", "2",
                    "--timeout-s", "10")
    assert done.returncode != 0
    assert re.search(r"exitcode\s*:\s*3", done.stderr), done.stderr[-2000:]  # torchrun names the dead rank
