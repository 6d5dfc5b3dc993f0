"""`bench check` passes every correct configuration that bench can time, each checked as built:
compiled torch, every torch variant, JAX scans with a remainder, MLX eager, and the multi-device
modes over their real ranks or devices (2 gloo processes under torchrun; 2 emulated XLA CPU
devices). The defect side of the check is tests/bench/test_check.py; the default trainer of
every backend in both dtypes is tests/contract/test_contract.py."""

import os
import subprocess
import sys

import pytest

from bench import check

SINGLE_PROCESS = [
    ("torch", "float32", {"compile": True}),
    ("torch", "float64", {"compile": True}),
    ("torch", "float64", {"variant": "r2"}),
    ("torch", "float64", {"variant": "r3"}),
    ("torch", "float64", {"variant": "r4"}),
    ("torch", "float32", {"optimizer": "default", "host_loop": True}),
    ("jax", "float32", {"steps_per_call": 2}),
    ("jax", "float64", {"variant": "r3", "steps_per_call": 2}),
    ("mlx", "float32", {"compile": False}),
]


@pytest.mark.parametrize("name, dtype, options", SINGLE_PROCESS,
                         ids=[f"{n}-{d}-{','.join(f'{k}={v}' for k, v in o.items())}" for n, d, o in SINGLE_PROCESS])
def test_a_correct_configuration_passes(name, dtype, options):
    result = check.check_trainer(name, dtype=dtype, options=options)
    assert result["verdict"] == "pass", check.format_report(result)
    assert result["options"] == {**result["options"], **options}  # what was checked is what was asked


def bench_check(*args, launcher=(), env=None):
    cmd = [*launcher, "-m", "bench", "check", *args] if launcher else [sys.executable, "-m", "bench", "check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "cells"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_gloo_ranks_pass_the_check(mode, dtype):
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    run = bench_check("--backend", "torch", "--dtype", dtype, "--parallel", mode, launcher=launcher)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.count("verdict: pass") == 1  # rank 0 reports, for both ranks
    assert f"'parallel': '{mode}'" in run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pmap", "sharding", "cells"])
def test_two_emulated_jax_devices_pass_the_check(mode):
    run = bench_check("--backend", "jax", "--parallel", mode, "--opt", "n_devices=2",
                      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "verdict: pass" in run.stdout and "'n_devices': 2" in run.stdout
