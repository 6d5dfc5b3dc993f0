"""Module 3: the CUDA kernels, run on the CPU by numba's CUDA simulator in a subprocess.

numba picks the simulator when it is first imported, and this process has imported it already,
so ``cuda_sim_check.py`` runs once in a fresh interpreter with NUMBA_ENABLE_CUDASIM=1 and every
check it reports becomes one test here. ``cuda_ptx_check.py`` compiles the same kernels for a
real GPU (no GPU needed, only the CUDA toolkit's NVVM and ptxas) to check their resources.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
SIM_CHECKS = [
    "map_zip",
    "reduce",
    "matmul_small_shapes",
    "matmul_off_tile_shapes",
    "matmul_gradient",
    "practice_kernels",
    "to_numpy_of_device_arrays",
    "device_residency",
    "launch_sizes",
    "matmul_thread_mapping",
    "matmul_coalesced_loads",
    "matmul_shared_banks",
]

# About 40 s on two busy cores: the simulator runs every GPU thread as a Python thread.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    report = tmp_path_factory.mktemp("cuda_sim") / "report.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run(
        [sys.executable, str(HERE / "cuda_sim_check.py"), "--report", str(report)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert report.exists(), f"the simulator script wrote no report:\n{output}"
    return {"returncode": done.returncode, "output": output, "checks": json.loads(report.read_text())}


def test_the_simulator_script_runs_exactly_these_checks(simulated: dict[str, Any]) -> None:
    assert sorted(simulated["checks"]) == sorted(SIM_CHECKS), simulated["output"]
    if not any(simulated["checks"].values()):
        assert simulated["returncode"] == 0 and "all CUDA checks passed" in simulated["output"]


@pytest.mark.parametrize("name", SIM_CHECKS)
def test_under_the_simulator(simulated: dict[str, Any], name: str) -> None:
    assert name in simulated["checks"], simulated["output"]
    failure = simulated["checks"][name]
    assert failure is None, failure


def test_kernels_compile_for_a_gpu_and_fit_a_block() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    done = subprocess.run(
        [sys.executable, str(HERE / "cuda_ptx_check.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    assert set(report) == {"map", "zip", "reduce", "matrix_multiply", "sum_practice", "mm_practice"}
    for name, used in report.items():
        # Registers are handed out per warp in multiples of 8 per thread; a block must fit in one
        # multiprocessor's 65536, or the launch fails with "too many resources requested".
        per_thread = -(-used["registers"] // 8) * 8
        assert per_thread * used["threads_per_block"] <= 65536, (name, used)
        assert used["shared_bytes"] <= 48 * 1024, (name, used)
        assert used["spill_bytes"] == 0, (name, used)
        if name != "mm_practice":  # one block of size x size threads, by the exercise's design
            assert used["threads_per_block"] <= 256, (name, used)
