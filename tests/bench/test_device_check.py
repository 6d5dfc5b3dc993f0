"""`python -m bench.device_check` on the CPU: the plan for simulated machines (1 and 2 CUDA GPUs, a
TPU, no accelerator), the verdicts, summary and exit code from fake command results, the runner's
budget and timeouts, and the real one-line exit 0 of a machine with neither a GPU nor a TPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import device_check as dc
from bench import device_machine, run_all

ROOT = Path(__file__).resolve().parents[2]
EVERY_BACKEND_ON_CUDA = {"reference": ("cuda", "cpu"), "torch": ("cuda", "cpu"), "jax": ("gpu", "cpu"),
                         "mlx": ("cpu",), "tinygrad": ("cuda", "cpu")}
ONE_GPU = dc.Machine(gpus=("NVIDIA H200",), cuda_devices=1, bf16=True, jax_gpus=1, usable=EVERY_BACKEND_ON_CUDA,
                     minitorch=True)
TWO_T4 = dc.Machine(gpus=("Tesla T4", "Tesla T4"), cuda_devices=2, bf16=False, jax_gpus=2,
                    usable=EVERY_BACKEND_ON_CUDA, minitorch=True)
TPU_V5E_8 = dc.Machine(tpus=("TPU v5 lite",) * 8, usable={"reference": ("cpu",), "torch": ("cpu",),
                                                          "jax": ("tpu", "cpu"), "tinygrad": ("cpu",)},
                       tpu_hint="TPU_ACCELERATOR_TYPE")
CPU_ONLY = dc.Machine()


def keys(steps: list[dc.Step]) -> list[str]:
    return [s.key for s in steps]


def arg(step: dc.Step, flag: str) -> str:
    return step.argv[step.argv.index(flag) + 1]


def options(step: dc.Step) -> dict[str, str]:
    return dict(step.argv[i + 1].split("=", 1) for i, w in enumerate(step.argv) if w == "--opt")


# ---------------------------------------------------------------------------------------------
# The plan


def test_one_cuda_gpu_checks_every_backend_and_configuration_then_the_ladder_alone(tmp_path):
    steps = dc.build_plan(ONE_GPU, tmp_path)
    assert len(set(keys(steps))) == len(steps)
    torch = {(arg(s, "--dtype"), tuple(sorted(options(s).items()))) for s in steps
             if s.kind == "check" and arg(s, "--backend") == "torch"}
    assert torch == {("float32", ()), ("float64", ()), ("float32", (("compile", "true"),)),
                     ("float32", (("cuda_graphs", "true"),)), ("float32", (("amp", "fp16"),)),
                     ("float32", (("amp", "bf16"),)), ("float64", (("variant", "r2"),)),
                     ("float64", (("variant", "r3"),)), ("float64", (("variant", "r4"),)),
                     ("float32", (("host_loop", "true"), ("optimizer", "default"))),
                     ("float32", (("optimizer", "foreach"),))}
    assert {"check-reference-cuda-float32", "check-reference-cuda-float64", "check-jax-gpu-float32",
            "check-jax-gpu-float64", "check-jax-gpu-float32-precision-default", "check-tinygrad-cuda-float32",
            "check-tinygrad-cuda-float64", "minitorch-cuda"} <= set(keys(steps))
    assert not [k for k in keys(steps) if "mlx" in k or "parallel" in k or "xla" in k]
    for step in steps:
        if step.kind == "check":
            assert arg(step, "--json") == str(tmp_path / f"{step.key}.json")
            assert arg(step, "--device") in ("cuda", "gpu")
    ladder = steps[-1]
    assert ladder.kind == "ladder" and ladder.alone and not any(s.alone for s in steps[:-1])
    assert ladder.argv[1:] == ["-m", "bench", "ladder", "--device", "cuda", "--seconds", dc.LADDER_SECONDS,
                               "--out", str(tmp_path)]
    assert ladder.shown() == f"python -m bench ladder --device cuda --seconds {dc.LADDER_SECONDS}"


def test_minitorch_runs_its_cuda_script_on_the_real_gpu_not_the_simulator(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    step = next(s for s in dc.build_plan(ONE_GPU, tmp_path) if s.key == "minitorch-cuda")
    script = Path(step.argv[-1])
    assert script == ROOT / "tests" / "minitorch" / "cuda_sim_check.py" and script.exists()
    assert "NUMBA_ENABLE_CUDASIM" not in dc.environment(step)
    # the pytest wrapper forces the simulator, which is why the plan runs the script itself
    assert 'NUMBA_ENABLE_CUDASIM="1"' in (ROOT / "tests/minitorch/test_minitorch_cuda.py").read_text()


def test_jax_on_a_gpu_does_not_preallocate_so_checks_share_the_gpu(tmp_path):
    for step in dc.build_plan(ONE_GPU, tmp_path):
        if "--backend" in step.argv and arg(step, "--backend") == "jax":
            assert dc.environment(step)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_two_cuda_gpus_add_torchrun_and_jax_multi_device_checks_and_no_bf16_without_native_bf16(tmp_path):
    steps = dc.build_plan(TWO_T4, tmp_path)
    torchrun = [s for s in steps if "torch.distributed.run" in s.argv]
    assert [options(s)["parallel"] for s in torchrun] == ["ddp", "cells"]
    for step in torchrun:
        assert step.argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node=2"]
        assert step.kind == "check" and step.timeout_s == dc.COMPILE_TIMEOUT_S
    jax_multi = [options(s) for s in steps if "check-jax-gpu" in s.key and "parallel" in options(s)]
    assert jax_multi == [{"parallel": m, "n_devices": "2"} for m in ("pmap", "sharding", "cells")]
    assert "check-torch-cuda-float32-amp-fp16" in keys(steps)
    assert "check-torch-cuda-float32-amp-bf16" not in keys(steps)
    assert steps[-1].kind == "ladder"
    assert dc.build_plan(TWO_T4, tmp_path)[0].key == "check-torch-cuda-float32"
    assert TWO_T4.slug == "tesla-t4-x2" and ONE_GPU.slug == "nvidia-h200"


def test_a_tpu_runs_jax_alone_refuses_float64_and_adds_torch_xla_only_where_its_venv_exists(tmp_path):
    steps = dc.build_plan(TPU_V5E_8, tmp_path)
    assert all(s.alone for s in steps) and all(arg(s, "--device") == "tpu" for s in steps)
    assert [s.key for s in steps if s.kind == "refusal"] == ["check-jax-tpu-float64"]
    assert "--json" not in next(s for s in steps if s.kind == "refusal").argv
    assert {"check-jax-tpu-float32", "check-jax-tpu-float32-precision-default",
            "check-jax-tpu-float32-parallel-sharding-n_devices-2"} <= set(keys(steps))
    assert not [s for s in steps if s.kind in ("ladder", "script") or "torch" in s.key]
    with_xla = dc.build_plan(dataclasses.replace(TPU_V5E_8, xla_python="/x/.venv-xla/bin/python"), tmp_path)
    xla = with_xla[-1]
    assert xla.argv[0] == "/x/.venv-xla/bin/python" and arg(xla, "--device") == "xla" and xla.alone
    assert dc.environment(xla)["PJRT_DEVICE"] == "TPU"
    assert TPU_V5E_8.slug == "tpu-v5-lite-x8"


def test_cpu_only_machine_has_nothing_to_plan(tmp_path):
    assert not CPU_ONLY.accelerated and CPU_ONLY.name == "cpu"
    cpu_everywhere = dc.Machine(usable={n: ("cpu",) for n in EVERY_BACKEND_ON_CUDA})
    assert dc.build_plan(cpu_everywhere, tmp_path) == []


def test_every_planned_option_is_one_the_backend_declares(tmp_path):
    import backends

    for machine in (ONE_GPU, TWO_T4, TPU_V5E_8):
        for step in dc.build_plan(machine, tmp_path):
            if "--backend" not in step.argv:
                continue
            name = arg(step, "--backend")
            if not backends.REGISTRY[name].installed():
                continue
            cls = backends.backend_class(name)
            assert arg(step, "--device") in cls.devices
            parsed = {k: cls.option(k).parse(v) for k, v in options(step).items()}
            # torch's combinations depend on device and dtype only (bf16 also asks the GPU)
            if name == "torch" and parsed.get("amp") != "bf16":
                backend = object.__new__(cls)
                backend.device, backend.dtype = arg(step, "--device"), arg(step, "--dtype")
                backend.parse_options(parsed)


# ---------------------------------------------------------------------------------------------
# Detection (with the driver tool and the probes faked)


def fake_probes(monkeypatch, gpus: list[str], usable: dict[str, tuple[str, ...]], facts: dict) -> None:
    import backends

    monkeypatch.setattr(run_all, "nvidia_gpus", lambda: gpus)
    monkeypatch.setattr(backends, "available", lambda: list(usable))
    monkeypatch.setattr(run_all, "probe", lambda name, dtype: (
        list(usable[name]), {"cuda": "device 'cuda' requested but torch sees no CUDA GPU"}
        if "cuda" not in usable[name] and name == "torch" else {}))
    monkeypatch.setattr(device_machine, "child_json",
                        lambda code, env=None: facts.get("torch" if "torch" in code else "jax"))
    for name in device_machine.TPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_detect_one_gpu_from_nvidia_smi_and_the_probes(monkeypatch):
    fake_probes(monkeypatch, ["NVIDIA H200"], EVERY_BACKEND_ON_CUDA,
                {"torch": {"count": 1, "bf16": True}, "jax": {"gpu": 1, "tpu": []}})
    machine = device_machine.detect()
    assert (machine.gpus, machine.cuda_devices, machine.bf16, machine.jax_gpus, machine.tpus) == (
        ("NVIDIA H200",), 1, True, 1, ())
    assert machine.usable == EVERY_BACKEND_ON_CUDA and machine.problems() == []


def test_a_gpu_that_torch_cannot_use_is_a_problem_that_fails_the_run(monkeypatch, tmp_path):
    fake_probes(monkeypatch, ["NVIDIA H200"], {"torch": ("cpu",), "jax": ("gpu", "cpu")},
                {"jax": {"gpu": 1, "tpu": []}})
    machine = device_machine.detect()
    assert machine.cuda_devices == 0 and machine.can("jax", "gpu")
    assert len(machine.problems()) == 1 and "torch cannot use CUDA" in machine.problems()[0]
    assert not [s for s in dc.build_plan(machine, tmp_path) if "check-torch" in s.key or s.kind == "ladder"]
    assert machine.not_here() == ["torch cuda: device 'cuda' requested but torch sees no CUDA GPU"]
    record, summary = dc.summarise(machine, [], [], tmp_path, 1.0)
    assert record["passed"] is False and "**problem**" in summary


def test_no_gpu_and_no_tpu_hint_imports_nothing(monkeypatch):
    def no_probe(name: str, dtype: str) -> None:
        raise AssertionError("a machine without accelerators must not be probed")

    fake_probes(monkeypatch, [], {}, {})
    monkeypatch.setattr(run_all, "probe", no_probe)
    monkeypatch.setattr(device_machine.glob, "glob", lambda pattern: [])
    assert device_machine.detect() == dc.Machine()
    monkeypatch.setenv("TPU_NAME", "local")
    assert device_machine.tpu_hint() == "TPU_NAME"


# ---------------------------------------------------------------------------------------------
# Verdicts, summary and exit code from fake results


def check(tmp_path: Path, key: str = "check-torch-cuda-float32", kind: str = "check") -> dc.Step:
    return dc.Step(key, kind, ["python", "-m", "bench", "check", "--backend", "torch"])


def write(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("rc, record, ok, status", [
    (0, {"verdict": "pass", "worst": 1e-7}, True, "pass"),
    (0, {"verdict": "not exact: amp=bf16, deviation 3.0e-03", "worst": 3e-3}, True, "not exact: amp=bf16"),
    (1, {"verdict": "FAIL", "worst": 0.5}, False, "FAIL"),
    (0, None, False, "error (exit 0): the last line"),
    (2, None, False, "error (exit 2): the last line"),
    (1, {"verdict": "pass", "worst": 0.0}, False, "pass"),  # a crash after the verdict was written
])
def test_a_check_is_judged_by_its_exit_code_and_its_own_json(tmp_path, rc, record, ok, status):
    step = check(tmp_path)
    if record:
        write(tmp_path / f"{step.key}.json", record)
    passed, text, worst = dc.evaluate(step, dc.Outcome(rc, 3.0, "first\nthe last line\n"), tmp_path)
    assert passed is ok and text.startswith(status)
    assert worst == (record or {}).get("worst")


def test_timeouts_unstarted_commands_refusals_and_scripts(tmp_path):
    step = check(tmp_path)
    assert dc.evaluate(step, dc.Outcome(None, 150.2, "", timed_out=True), tmp_path)[:2] == (
        False, "timed out after 150 s")
    assert dc.evaluate(step, dc.Outcome(not_run="the time budget was spent"), tmp_path)[:2] == (
        False, "not run: the time budget was spent")
    refusal = check(tmp_path, "check-jax-tpu-float64", "refusal")
    assert dc.evaluate(refusal, dc.Outcome(2, 1, "error: TPUs have no float64\n"), tmp_path)[:2] == (
        True, "refused as expected: error: TPUs have no float64")
    assert not dc.evaluate(refusal, dc.Outcome(0, 1, "verdict: pass"), tmp_path)[0]
    script = check(tmp_path, "minitorch-cuda", "script")
    assert dc.evaluate(script, dc.Outcome(0, 1, "all CUDA checks passed"), tmp_path)[:2] == (True, "pass")
    assert dc.evaluate(script, dc.Outcome(1, 1, "AssertionError: matmul"), tmp_path)[:2] == (
        False, "FAIL (exit 1): AssertionError: matmul")


def ladder_record(*rows: dict) -> dict:
    return {"rows": [{"key": "reference", "equivalence": {"verdict": "pass"}},
                     {"key": "amp", "equivalence": {"verdict": "not exact: amp=bf16, deviation 1e-3"}}, *rows]}


@pytest.mark.parametrize("extra, ok, status", [
    ({"key": "cells", "skipped": "needs >= 2 CUDA GPUs"}, True, "pass: 2 rungs checked (1 not exact), 1 skipped"),
    ({"key": "compile", "equivalence": {"verdict": "FAIL"}}, False, "FAIL: compile; 3 rungs checked"),
    ({"key": "cells", "skipped": "torchrun failed: NCCL error"}, False, "FAIL: cells; 2 rungs checked"),
])
def test_the_ladder_fails_on_a_failed_rung_or_a_failed_torchrun(tmp_path, extra, ok, status):
    step = check(tmp_path, "ladder-torch-cuda", "ladder")
    write(tmp_path / "ladder_torch_cuda.json", ladder_record(extra))
    passed, text, _ = dc.evaluate(step, dc.Outcome(0, 100, ""), tmp_path)
    assert passed is ok and text.startswith(status)


def test_summary_lists_every_command_and_fails_on_any_failure(tmp_path):
    steps = [check(tmp_path, "check-a"), check(tmp_path, "check-b"), check(tmp_path, "minitorch-cuda", "script")]
    write(tmp_path / "check-a.json", {"verdict": "pass", "worst": 2e-7})
    write(tmp_path / "check-b.json", {"verdict": "FAIL", "worst": 0.25})
    outcomes = [dc.Outcome(0, 4.0), dc.Outcome(1, 5.0), dc.Outcome(0, 6.0, "all CUDA checks passed")]
    record, summary = dc.summarise(ONE_GPU, steps, outcomes, tmp_path, 20.0)
    assert record["passed"] is False and record["failed"] == ["check-b"]
    assert [r["ok"] for r in record["steps"]] == [True, False, True]
    assert summary.startswith("# Device check: NVIDIA H200\n")
    assert "3 commands in 20 s, 2 passed, 1 did not" in summary
    assert "| check-a | pass | 2.0e-07 | 4 |" in summary and "| check-b | **FAIL** | 2.5e-01 | 5 |" in summary
    record, _ = dc.summarise(ONE_GPU, steps[:1], outcomes[:1], tmp_path, 1.0)
    assert record["passed"] is True and record["failed"] == []


def python_step(key: str, code: str, kind: str = "script", alone: bool = False, timeout_s: float = 60) -> dc.Step:
    return dc.Step(key, kind, [sys.executable, "-c", code], timeout_s, alone=alone)


def test_run_plan_shares_the_machine_then_runs_the_alone_steps_and_keeps_to_the_budget(tmp_path):
    order = []
    steps = [python_step("ladder", "print('timed')", alone=True),
             python_step("a", "print('ok')"),
             python_step("slow", "import time; time.sleep(30)", timeout_s=1),
             python_step("b", "import sys; print('bad', file=sys.stderr); sys.exit(3)")]
    outcomes = dc.run_plan(steps, tmp_path, budget_s=60, jobs=2, report=lambda s, o: order.append(s.key))
    assert order[-1] == "ladder"
    assert [o.returncode for o in outcomes] == [0, 0, None, 3]
    assert outcomes[2].timed_out and outcomes[2].seconds < 20
    assert (tmp_path / "logs" / "b.log").read_text().endswith("bad\n")
    late = dc.run_plan([python_step("late", "print(1)")], tmp_path, budget_s=1, jobs=1)
    assert late[0].not_run == "the time budget was spent"


def test_a_timeout_ends_what_the_command_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "time.sleep(60)")
    outcome = dc.run_step(python_step("spawns", code, timeout_s=3), tmp_path, dc.time.monotonic() + 60)
    assert outcome.timed_out
    status = Path(f"/proc/{int(pid_file.read_text())}/status")
    for _ in range(50):  # gone, or a zombie its new parent has yet to reap
        if not status.exists() or "\tZ" in status.read_text():
            break
        dc.time.sleep(0.1)
    else:
        pytest.fail("the command's own child outlived the timeout")


def test_main_writes_the_json_summary_and_exits_1_on_a_failed_check(tmp_path, monkeypatch, capsys):
    def plan(machine: dc.Machine, out: Path) -> list[dc.Step]:
        verdict = ("import json, sys; json.dump({{'verdict': '{v}', 'worst': 1e-7}}, "
                   "open(sys.argv[1], 'w')); sys.exit({rc})")
        return [dc.Step(key, "check", [sys.executable, "-c", verdict.format(v=v, rc=rc), str(out / f"{key}.json")])
                for key, v, rc in steps]

    monkeypatch.setattr(dc, "detect", lambda: ONE_GPU)
    monkeypatch.setattr(dc, "build_plan", plan)
    steps = [("check-good", "pass", 0), ("check-bad", "FAIL", 1)]
    assert dc.main(["--out", str(tmp_path / "r"), "--jobs", "2"]) == 1
    record = json.loads((tmp_path / "r" / "device_check.json").read_text())
    assert record["failed"] == ["check-bad"] and record["device_name"] == "NVIDIA H200"
    assert "**FAIL**" in (tmp_path / "r" / "summary.md").read_text()
    assert "BAD check-bad: FAIL" in capsys.readouterr().err
    steps = [("check-good", "pass", 0)]
    assert dc.main(["--out", str(tmp_path / "r2")]) == 0


def test_a_real_bench_check_step_is_judged_from_the_json_it_writes(tmp_path):
    pytest.importorskip("torch")
    step = dc.check_step(tmp_path, "reference", "cpu")
    outcome = dc.run_step(step, tmp_path, deadline=dc.time.monotonic() + 300)
    assert dc.evaluate(step, outcome, tmp_path)[:2] == (True, "pass"), outcome.output[-2000:]


def test_cpu_only_machine_says_so_in_one_line_and_exits_0(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (tools / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in device_machine.TPU_VARIABLES}
    env["PATH"] = f"{tools}{os.pathsep}{env.get('PATH', '')}"
    if device_machine.tpu_hint() and not any(os.environ.get(k) for k in device_machine.TPU_VARIABLES):
        pytest.skip("this machine has TPU-like device files")
    done = subprocess.run([sys.executable, "-m", "bench.device_check"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and len(done.stdout.splitlines()) == 1
    assert done.stdout.startswith("device-check: no CUDA GPU (nvidia-smi lists none) and no TPU here")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # no results folder
