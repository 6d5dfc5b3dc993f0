"""`bench all --device auto`: each backend on the best device it can use here, files labelled with
it, one line of what was found, and the warning for a GPU that torch cannot see. Fake Backend
classes stand in for the frameworks, so every machine is simulated on the CPU."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

import backends
from backends.base import Backend
from bench import cli, run_all


def fake_class(name: str, devices: tuple[str, ...], present: set[str], no_float64: set[str] = frozenset(),
               crash: set[str] = frozenset()) -> type[Backend]:
    """A Backend offering `devices`, of which only `present` exist here."""

    class Fake(Backend):
        def _check_device_present(self) -> None:
            if self.device in crash:
                raise RuntimeError("driver exploded\nsecond line")
            if self.dtype == "float64" and self.device in no_float64:
                raise ValueError(f"no float64 on {self.device!r}")
            if self.device not in present:
                raise ValueError(f"device {self.device!r} requested but {name} sees none")

    Fake.name, Fake.devices = name, devices
    return Fake


MACHINES = {
    # backend -> (devices it offers, devices present here)
    "cuda box": {"torch": (("cpu", "cuda", "xla"), {"cpu", "cuda", "xla"}),
                 "jax": (("cpu", "gpu", "tpu"), {"cpu", "gpu"}),
                 "tinygrad": (("cpu", "cuda", "metal"), {"cpu", "cuda"})},
    "tpu box": {"torch": (("cpu", "cuda", "xla"), {"cpu", "xla"}),
                "jax": (("cpu", "gpu", "tpu"), {"cpu", "tpu"}),
                "tinygrad": (("cpu", "cuda", "metal"), {"cpu"})},
    "mac": {"torch": (("cpu", "cuda", "xla"), {"cpu"}),
            "mlx": (("cpu", "gpu"), {"cpu", "gpu"}),
            "tinygrad": (("cpu", "cuda", "metal"), {"cpu", "metal"})},
}
EXPECTED = {
    "cuda box": {"torch": "cuda", "jax": "gpu", "tinygrad": "cuda"},
    "tpu box": {"torch": "cpu", "jax": "tpu", "tinygrad": "cpu"},  # xla is never picked by auto
    "mac": {"torch": "cpu", "mlx": "gpu", "tinygrad": "metal"},
}


def use_classes(monkeypatch, classes: dict[str, type[Backend]]) -> None:
    def backend_class(name: str) -> type[Backend]:
        if name not in classes:
            raise ValueError(f"backend {name!r} needs {name}: pip install -e '.[{name}]'")
        return classes[name]

    monkeypatch.setattr(backends, "backend_class", backend_class)


@pytest.mark.parametrize("machine", MACHINES)
def test_auto_picks_the_best_present_device_of_each_backend(monkeypatch, machine):
    use_classes(monkeypatch, {n: fake_class(n, d, p) for n, (d, p) in MACHINES[machine].items()})
    chosen = run_all.choose_devices(list(MACHINES[machine]), "float32", find=run_all.usable_devices)
    assert {n: c[0] for n, c in chosen.items()} == EXPECTED[machine]
    for name, (device, usable, why) in chosen.items():
        offered, present = MACHINES[machine][name]
        assert usable[0] == device and set(usable) == present - {"xla"}
        assert set(why) == {d for d in offered if d not in present and d != "xla"}


def test_the_preference_order_is_accelerators_then_cpu_without_xla():
    assert run_all.AUTO_PREFERENCE[-1] == "cpu" and "xla" not in run_all.AUTO_PREFERENCE
    order = run_all.AUTO_PREFERENCE
    assert order.index("cuda") < order.index("gpu") < order.index("tpu") < order.index("metal")


def test_the_dtype_takes_part_in_the_choice(monkeypatch):
    use_classes(monkeypatch, {"mlx": fake_class("mlx", ("cpu", "gpu"), {"cpu", "gpu"}, no_float64={"gpu"})})
    assert run_all.choose_devices(["mlx"], "float32", find=run_all.usable_devices)["mlx"][0] == "gpu"
    device, usable, why = run_all.choose_devices(["mlx"], "float64", find=run_all.usable_devices)["mlx"]
    assert (device, usable, why) == ("cpu", ["cpu"], {"gpu": "no float64 on 'gpu'"})


def test_a_crashing_device_is_unusable_not_fatal(monkeypatch):
    use_classes(monkeypatch, {"tinygrad": fake_class("tinygrad", ("cpu", "cuda"), {"cpu", "cuda"},
                                                     crash={"cuda"})})
    assert run_all.usable_devices("tinygrad", "float32") == (["cpu"], {"cuda": "RuntimeError: driver exploded"})


def test_no_usable_device_and_not_installed_are_named_in_the_one_line(monkeypatch):
    use_classes(monkeypatch, {"tinygrad": fake_class("tinygrad", ("cpu", "cuda"), set()),
                              "torch": fake_class("torch", ("cpu", "cuda", "xla"), {"cpu", "cuda"})})
    chosen = run_all.choose_devices(["torch", "tinygrad", "jax"], "float32", find=run_all.usable_devices)
    assert chosen["tinygrad"][0] is None and chosen["jax"][0] is None
    line = run_all.devices_line(chosen)
    assert "\n" not in line
    assert line.startswith("devices: torch cuda [cuda, cpu]; tinygrad none (device 'cuda' requested")
    assert "jax none (backend 'jax' needs jax" in line


def test_cuda_warning_only_when_the_driver_lists_a_gpu_that_torch_cannot_use():
    no_cuda = {"torch": ("cpu", ["cpu"], {"cuda": "device 'cuda' requested but torch sees no CUDA GPU"})}
    with_cuda = {"torch": ("cuda", ["cuda", "cpu"], {})}
    warning = run_all.cuda_warning(["NVIDIA H200"], no_cuda)
    assert warning.startswith("warning: nvidia-smi lists 1 GPU(s) (NVIDIA H200) but torch cannot use CUDA")
    assert "\n" not in warning and "sees no CUDA GPU" in warning
    assert run_all.cuda_warning([], no_cuda) is None
    assert run_all.cuda_warning(["NVIDIA H200"], with_cuda) is None
    assert run_all.cuda_warning(["NVIDIA H200"], {"jax": ("gpu", ["gpu"], {})}) is None
    assert run_all.cuda_warning(["NVIDIA H200"], {"reference": no_cuda["torch"]}) == warning


def fake_tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_nvidia_gpus_reads_nvidia_smi_and_is_empty_without_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert run_all.nvidia_gpus() == []
    fake_tool(tmp_path, "nvidia-smi", "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\n"
                                      "echo 'GPU 1: Tesla T4 (UUID: GPU-2)'\n")
    assert run_all.nvidia_gpus() == ["NVIDIA H200", "Tesla T4"]
    fake_tool(tmp_path, "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
    assert run_all.nvidia_gpus() == []


def default_speed(arg: dict[str, str], n_commands: int) -> float:
    return 100.0 if arg["--backend"] == "reference" else 1000.0


def run_bench_all(monkeypatch, tmp_path, argv: list[str], xla_python: Path | None = None,
                  speed=default_speed, cores: int = 2, fails=lambda cmd: False) -> tuple[int, list[list[str]]]:
    """`bench all` with every `bench time` faked: it writes a timing record for its --json, at the
    speed `speed(its arguments, how many commands ran)`, unless `fails(its command)`; the machine
    has `cores` cores."""
    monkeypatch.setattr(run_all.sysinfo, "cores_in_use", lambda: cores)
    commands, peaks = [], []
    monkeypatch.setattr(run_all, "XLA_PYTHON", xla_python or tmp_path / "no-xla-env" / "python")

    def run_command(cmd: list[str], env: dict[str, str]) -> int:
        if cmd[1:3] == ["-m", "bench.floors"]:  # the machine's peaks, measured once per device
            peaks.append(cmd[4])
            Path(cmd[3]).parent.mkdir(parents=True, exist_ok=True)
            Path(cmd[3]).write_text(json.dumps({"gemm_gflops_square": 100.0}))
            return 0
        commands.append(cmd)
        if fails(cmd):
            return 1
        arg = dict(zip(cmd, cmd[1:]))
        record = {"backend": arg["--backend"], "device": arg["--device"], "dtype": arg["--dtype"],
                  "samples_per_sec": speed(arg, len(commands)), "batch_size": 8, "config": {},
                  "data": arg["--data"], "checked": "--check" in cmd, "options_given": {},
                  "cores": int(arg.get("--cores", cores)), "cores_machine": cores}
        Path(arg["--json"]).parent.mkdir(parents=True, exist_ok=True)
        Path(arg["--json"]).write_text(json.dumps(record))
        return 0

    monkeypatch.setattr(run_all, "run_command", run_command)
    monkeypatch.setattr(run_all, "nvidia_gpus", lambda: ["NVIDIA H200"])
    if not any(a.startswith("--processes") for a in argv):  # one process, no single-core rows,
        argv = [*argv, "--processes", "1", "--no-single-core"]  # unless the test asks for them
    args = cli.build_parser().parse_args(["all", "--out", str(tmp_path), *argv])
    return run_all.run(args), commands


def test_bench_all_defaults_to_auto_and_labels_files_with_the_chosen_device(monkeypatch, tmp_path, capsys):
    use_classes(monkeypatch, {"reference": fake_class("reference", ("cpu", "cuda"), {"cpu", "cuda"}),
                              "torch": fake_class("torch", ("cpu", "cuda", "xla"), {"cpu", "cuda"}),
                              "jax": fake_class("jax", ("cpu", "gpu", "tpu"), {"cpu"})})
    monkeypatch.setattr(run_all, "probe", run_all.usable_devices)
    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "reference,torch,jax"])
    assert code == 0
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert files == ["jax-cpu-float32-fused.json", "jax-cpu-float32.json", "reference-cuda-float32.json",
                     "torch-cuda-float32-compile.json", "torch-cuda-float32.json"]
    assert [c[c.index("--device") + 1] for c in commands] == ["cuda", "cuda", "cuda", "cpu", "cpu"]
    err = capsys.readouterr().err
    assert "devices: reference cuda [cuda, cpu]; torch cuda [cuda, cpu]; jax cpu\n" in err
    assert "warning" not in err


def test_bench_all_warns_when_torch_misses_the_gpu_nvidia_smi_lists(monkeypatch, tmp_path, capsys):
    use_classes(monkeypatch, {"torch": fake_class("torch", ("cpu", "cuda", "xla"), {"cpu"})})
    monkeypatch.setattr(run_all, "probe", run_all.usable_devices)
    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "torch"])
    assert code == 0 and all(c[c.index("--device") + 1] == "cpu" for c in commands)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "nvidia-smi lists 1 GPU(s)" in warnings[0]


def test_an_explicit_device_is_used_as_given_without_probing(monkeypatch, tmp_path, capsys):
    def no_probe(name: str, dtype: str) -> None:
        raise AssertionError("an explicit --device must not probe")

    monkeypatch.setattr(run_all, "probe", no_probe)
    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "reference,torch", "--device", "cpu"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "reference-cpu-float32.json", "torch-cpu-float32-compile.json", "torch-cpu-float32-fused-compile.json",
        "torch-cpu-float32.json"]
    # The fused kernels are CPU-only: that row exists on the CPU (here) and not on CUDA (above).
    fused = [c for c in commands if "variant=r5-fused" in c]
    assert len(fused) == 1 and "compile=true" in fused[0]
    assert "devices:" not in capsys.readouterr().err


def test_jax_gets_its_fused_row_on_the_cpu_only(monkeypatch, tmp_path):
    use_classes(monkeypatch, {"jax": fake_class("jax", ("cpu", "gpu"), {"cpu", "gpu"})})
    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "jax", "--device", "cpu"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["jax-cpu-float32-fused.json", "jax-cpu-float32.json"]
    assert sum("variant=r5-fused" in c for c in commands) == 1
    code, commands = run_bench_all(monkeypatch, tmp_path / "gpu", ["--backends", "jax", "--device", "gpu"])
    assert code == 0 and not any("variant=r5-fused" in c for c in commands)


def test_probe_runs_in_a_child_process_and_reports_the_reference_devices():
    pytest.importorskip("torch")
    usable, why = run_all.probe("reference", "float32")
    assert usable[-1] == "cpu" and set(usable) | set(why) == {"cpu", "cuda"}


def test_probe_of_an_unknown_backend_is_a_reason_not_a_crash():
    usable, why = run_all.probe("nope", "float32")
    assert usable == [] and "unknown backend 'nope'" in why["*"]


def test_the_machine_is_measured_once_per_device_and_every_run_reads_it(monkeypatch, tmp_path):
    use_classes(monkeypatch, {"reference": fake_class("reference", ("cpu",), {"cpu"}),
                              "torch": fake_class("torch", ("cpu",), {"cpu"})})
    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "reference,torch", "--device", "cpu"])
    assert code == 0 and len(commands) == 4  # reference, torch, torch compile, torch fused + compile
    assert all(dict(zip(c, c[1:]))["--machine-peaks"] == str(tmp_path / "machine" / "peaks_cpu.json")
               for c in commands)
    assert (tmp_path / "machine" / "peaks_cpu.json").exists()


def test_torch_on_xla_joins_from_its_own_environment_when_it_exists(monkeypatch, tmp_path):
    use_classes(monkeypatch, {"torch": fake_class("torch", ("cpu", "xla"), {"cpu"})})
    monkeypatch.setattr(run_all, "probe", run_all.usable_devices)
    xla_python = tmp_path / "venv-xla" / "python"
    xla_python.parent.mkdir()
    xla_python.touch()
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    code, commands = run_bench_all(monkeypatch, tmp_path / "out", ["--backends", "torch"], xla_python)
    assert code == 0
    xla = [c for c in commands if c[0] == str(xla_python)]
    assert len(xla) == 1 and dict(zip(xla[0], xla[0][1:]))["--device"] == "xla"
    assert (tmp_path / "out" / "torch-xla-float32.json").exists()


def test_every_configuration_runs_in_fresh_processes_and_the_row_is_their_median(monkeypatch, tmp_path, capsys):
    use_classes(monkeypatch, {"jax": fake_class("jax", ("cpu",), {"cpu"})})
    monkeypatch.setattr(run_all, "EXTRA_RUNS", {})  # one configuration: jax's fused row is not the point
    speeds = iter([300.0, 200.0, 400.0])  # three processes, in the order they run
    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "jax", "--device", "cpu", "--processes",
                                                           "3", "--no-single-core"], speed=lambda *_: next(speeds))
    assert code == 0 and len(commands) == 3
    assert ["--check" in c for c in commands] == [True, False, False]  # checked once, by the first
    files = sorted(p.name for p in (tmp_path / "processes").glob("*.json"))
    assert files == [f"jax-cpu-float32.p{k}.json" for k in (1, 2, 3)]
    row = json.loads((tmp_path / "jax-cpu-float32.json").read_text())
    assert row["samples_per_sec"] == 300.0 and row["checked"] is True
    assert row["processes"]["samples_per_sec"] == [300.0, 200.0, 400.0]
    assert row["processes"]["spread"] == 2.0  # 400 / 200
    assert "| 2.00 / " in (tmp_path / "bench_table.md").read_text()


def test_a_failed_process_fails_its_configuration_without_a_row(monkeypatch, tmp_path, capsys):
    use_classes(monkeypatch, {"jax": fake_class("jax", ("cpu",), {"cpu"}),
                              "mlx": fake_class("mlx", ("cpu",), {"cpu"})})
    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "jax,mlx", "--device", "cpu",
                                                           "--processes", "2", "--no-single-core"],
                                   fails=lambda cmd: str(tmp_path / "processes" / "jax-cpu-float32.p2.json") in cmd)
    assert code == 1
    assert not (tmp_path / "jax-cpu-float32.json").exists() and (tmp_path / "mlx-cpu-float32.json").exists()
    assert "failed: jax-cpu-float32" in capsys.readouterr().err


def test_cpu_rows_are_also_timed_on_one_core_and_the_scaling_is_stated(monkeypatch, tmp_path, capsys):
    use_classes(monkeypatch, {"jax": fake_class("jax", ("cpu",), {"cpu"})})
    monkeypatch.setattr(run_all, "EXTRA_RUNS", {})  # one configuration: jax's fused row is not the point

    def speed(arg: dict[str, str], n: int) -> float:
        return 100.0 if arg.get("--cores") == "1" else 180.0

    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "jax", "--device", "cpu",
                                                           "--processes", "1"], speed=speed)
    assert code == 0 and len(commands) == 2
    one_core = [c for c in commands if "--cores" in c]
    assert len(one_core) == 1 and one_core[0][one_core[0].index("--cores") + 1] == "1"
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["jax-cpu-float32-1core.json", "jax-cpu-float32.json"]
    out = capsys.readouterr().out
    assert "| jax float32 on 1 of 2 cores | cpu | 100.0 |" in out
    assert "multi-core scaling: jax float32 1.80x on 2 cores over 1 (180.0 vs 100.0 samples/s)" in out
    assert "multi-core scaling" in (tmp_path / "bench_table.md").read_text()


def test_a_one_core_machine_gets_no_single_core_rows(monkeypatch, tmp_path):
    use_classes(monkeypatch, {"jax": fake_class("jax", ("cpu",), {"cpu"})})
    monkeypatch.setattr(run_all, "EXTRA_RUNS", {})  # one configuration: jax's fused row is not the point
    code, commands = run_bench_all(monkeypatch, tmp_path, ["--backends", "jax", "--device", "cpu",
                                                           "--processes", "1"], cores=1)
    assert code == 0 and len(commands) == 1 and "--cores" not in commands[0]
