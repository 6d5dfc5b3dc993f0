"""`make bench`: every installed backend timed at batch 8 in one run, in fresh processes (so one
framework's threads, allocator and JIT caches cannot slow another), each checked on the very
configuration it timed, then one table with the speed of each as a multiple of the reference's,
measured in this same run.

Every configuration runs in `--processes` fresh processes (2 by default): a process can settle in
a slower mode for its whole life, which its repeats cannot show, so the row is the median of the
processes' medians with the spread between processes beside the spread between repeats (each
process's own file is kept under processes/). On a CPU with several cores every configuration is
also timed pinned to one core (`bench time --cores 1`), so the table shows what the other cores
add (`--no-single-core` leaves those rows out).

Devices: `--device auto` (the default) gives each backend the best device it can use here, tried
in AUTO_PREFERENCE order, and labels its files with it (torch-cuda-float32.json); one line says
what each backend found. Each backend is probed in a child process of its own, because a
framework that opens a device may keep it (JAX holds a TPU until its process ends) and the run
itself must not hold any framework. `--device X` gives every backend X, as asked.

The peer: when pytorch-frame is installed (the `peer` extra), its Trompt is timed too, by
`bench peer` in a process of its own on the CPU, as a row labelled "(peer, not our model)": it is
another model, never checked and never the baseline. It joins a run of every backend (no
`--backends`) in float32 where something runs on the CPU; `--peer` asks for it in any run,
`--no-peer` leaves it out.

Results go to an untracked folder of their own (runs/<run id>/ by default), so running the main
job never changes the repository; the published results/ folder changes only when asked
(`--out results`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import backends
from backends import peers, spec
from bench import cli, output, results, sysinfo

# Further configurations worth a row of their own, as (file suffix, options, the one device they
# run on or None for any): torch compiling the step (compilation is reported apart as the first
# step's time), and on the CPU the fused C++ kernels of the embedding block and the mask (built
# once per machine, before timing) inside torch's compiled step and inside JAX's.
EXTRA_RUNS = {"torch": [("-compile", ["--opt", "compile=true"], None),
                        ("-fused-compile", ["--opt", "compile=true", "--opt", "variant=r5-fused"], "cpu")],
              "jax": [("-fused", ["--opt", "variant=r5-fused"], "cpu")]}
# torch_xla needs exactly torch 2.9.0, so it has its own virtualenv (`make xla-env`); when it
# exists, `bench all` times torch on the xla device from there as one more row.
XLA_PYTHON = Path(__file__).resolve().parent.parent / ".venv-xla" / "bin" / "python"
# glibc otherwise returns the fast backends' per-step buffers (<= 24 MB) to the kernel and maps
# them again every step. 32 MiB as the mmap threshold still lets the reference's ~0.5 GB buffers
# go back to the system. Measured to slow the reference (docs/REPORT.md), so it runs without.
FAST_BACKEND_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
                    "MALLOC_TOP_PAD_": "268435456"}
AUTO = "auto"
# Accelerators first, then the CPU. xla is never picked by itself: torch_xla needs its own
# virtualenv, and on a TPU it would compete with JAX for the chips.
AUTO_PREFERENCE = ("cuda", "gpu", "tpu", "metal", "cpu")
PROBE_TIMEOUT_S = 180.0
PEER_FILE = "peer-pytorch-frame-cpu-float32.json"
Found = tuple[list[str], dict[str, str]]  # usable devices (best first), why each other one is not
Chosen = dict[str, tuple[str | None, list[str], dict[str, str]]]  # backend -> (device, usable, why)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backends", default=None, help="comma-separated subset (default: all installed)")
    p.add_argument("--device", default=AUTO, help="auto: each backend on the best device it can use here "
                   f"({' > '.join(AUTO_PREFERENCE)}); or one device every backend must use (cpu, cuda, ...)")
    p.add_argument("--data", default="synthetic:small")
    p.add_argument("--batch-size", type=cli.positive_int, default=spec.BATCH_SIZE)
    p.add_argument("--dtype", default="float32", choices=spec.DTYPES)
    p.add_argument("--seconds", type=cli.positive_number, default=15.0, help="time budget per backend")
    p.add_argument("--reference-seconds", type=cli.positive_number, default=40.0,
                   help="time budget for the reference")
    p.add_argument("--out", default=None, help="directory for the JSON files and the table "
                   "(default: runs/<run id>/, untracked)")
    p.add_argument("--processes", type=cli.positive_int, default=2,
                   help="fresh processes per configuration (the row is the median of theirs)")
    p.add_argument("--single-core", action=argparse.BooleanOptionalAction, default=True,
                   help="also time every CPU configuration on one core, for the multi-core scaling")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None,
                   help="also time pytorch-frame's Trompt (bench peer; another model) on the CPU "
                        "(default: when installed, in a run of every backend in float32 with a CPU row)")


def environment_for(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FAST_BACKEND_ENV}
    return env if name == "reference" else {**env, **FAST_BACKEND_ENV}


# ---------------------------------------------------------------------------------------------
# --device auto


def usable_devices(name: str, dtype: str) -> Found:
    """The devices backend `name` can be built on here in `dtype`, best first (AUTO_PREFERENCE),
    and the one-line reason for each of its other devices. Imports the framework: call it in a
    process of its own (`probe`)."""
    try:
        cls = backends.backend_class(name)
    except ValueError as e:
        return [], {"*": first_line(e)}
    usable, why = [], {}
    for device in (d for d in AUTO_PREFERENCE if d in cls.devices):
        try:
            cls(device=device, dtype=dtype)
            usable.append(device)
        except ValueError as e:
            why[device] = first_line(e)
        except Exception as e:  # a broken driver or runtime: that device is unusable, not the run
            why[device] = f"{type(e).__name__}: {first_line(e)}"
    return usable, why


PROBE_CODE = ("import json, sys\nfrom bench.run_all import usable_devices\n"
              "print(json.dumps(usable_devices(sys.argv[1], sys.argv[2])))")


def probe(name: str, dtype: str) -> Found:
    """`usable_devices` in a child process (its devices and imports end with it)."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE_CODE, name, dtype], capture_output=True, text=True,
                              env=environment_for(name), timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [], {"*": f"probing its devices took over {PROBE_TIMEOUT_S:.0f} s"}
    lines = done.stdout.strip().splitlines()
    try:
        usable, why = json.loads(lines[-1])
        return list(usable), dict(why)
    except (IndexError, ValueError, TypeError):
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return [], {"*": f"probing its devices failed: {tail[0]}"}


def choose_devices(names: list[str], dtype: str, find: Callable[[str, str], Found] | None = None) -> Chosen:
    """{backend: (the device it will run on or None, every usable device, why the others are not)};
    `find(name, dtype)` is `probe` unless given."""
    chosen = {}
    for name in names:
        usable, why = (find or probe)(name, dtype)
        chosen[name] = (usable[0] if usable else None, usable, why)
    return chosen


def devices_line(chosen: Chosen) -> str:
    """One line: each backend's device and, in brackets, every device it found usable here."""
    parts = []
    for name, (device, usable, why) in chosen.items():
        if device is None:
            reason = next(iter(why.values()), "no device")
            parts.append(f"{name} none ({reason})")
        else:
            parts.append(f"{name} {device}" + (f" [{', '.join(usable)}]" if len(usable) > 1 else ""))
    return "devices: " + "; ".join(parts)


def nvidia_gpus() -> list[str]:
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H200 (UUID: ...)" -> "NVIDIA H200"); none
    without the driver's tool. Asks the driver only: no framework is imported."""
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line.split(":", 1)[1].split("(UUID")[0].strip() for line in done.stdout.splitlines()
            if line.startswith("GPU ") and ":" in line]


def cuda_warning(gpus: list[str], chosen: Chosen) -> str | None:
    """One line when the driver lists a GPU but torch cannot use CUDA: the virtualenv then holds a
    CPU build of torch (or one the driver is too old for) and every torch row runs on the CPU."""
    torch_like = next((n for n in ("torch", "reference") if n in chosen), None)  # both run on torch
    if not gpus or torch_like is None or "cuda" in chosen[torch_like][1]:
        return None
    why = chosen[torch_like][2].get("cuda") or next(iter(chosen[torch_like][2].values()), "")
    return (f"warning: nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}) but torch cannot use CUDA"
            f"{f' ({why})' if why else ''}: this torch is a CPU build or does not match the driver, so "
            f"torch runs on the CPU (`make clean-venv bench` rebuilds .venv keeping the system's torch)")


def run_command(cmd: list[str], env: dict[str, str]) -> int:
    return subprocess.run(cmd, env=env).returncode


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# ---------------------------------------------------------------------------------------------


def machine_peaks_once(out: Path, devices: set[str]) -> dict[str, Path]:
    """The GEMM rate and copy bandwidth of each device torch can measure (cpu, cuda), measured
    once in a child process with the fast backends' environment, for every result of the run."""
    paths = {}
    for device in sorted(devices & {"cpu", "cuda"}):
        path = out / "machine" / f"peaks_{device}.json"  # beside the results, not among them
        cmd = [sys.executable, "-m", "bench.floors", str(path), device]
        print(f"== machine peaks ({device}): {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        if run_command(cmd, environment_for("torch")) == 0:
            paths[device] = path
    return paths


def run(args: argparse.Namespace) -> int:
    names = args.backends.split(",") if args.backends else backends.available()
    unknown = [n for n in names if n not in backends.REGISTRY]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(backends.REGISTRY)}")
    missing = [n for n in backends.REGISTRY if n not in backends.available()]
    if missing:
        print(f"not installed here, skipped: {', '.join(missing)}", file=sys.stderr)
    if args.device == AUTO:
        chosen = choose_devices(names, args.dtype)
        print(devices_line(chosen), file=sys.stderr, flush=True)
        warning = cuda_warning(nvidia_gpus(), chosen)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        unusable = [n for n in names if chosen[n][0] is None]
        if unusable:
            print(f"no usable device here, skipped: {', '.join(unusable)}", file=sys.stderr)
        device_of = {n: chosen[n][0] for n in names if chosen[n][0] is not None}
    else:
        device_of = dict.fromkeys(names, args.device)
    with_peer = peer_wanted(args, device_of)
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or f"runs/{run_id}")
    out.mkdir(parents=True, exist_ok=True)
    peaks = machine_peaks_once(out, set(device_of.values()))
    planned = [(name, device, suffix, options) for name, device in device_of.items()
               for suffix, options, only_on in [("", [], None)] + EXTRA_RUNS.get(name, [])
               if only_on in (None, device)]
    if "torch" in names and args.device == "auto" and XLA_PYTHON.exists():
        planned.append(("torch", "xla", "", []))
    if args.single_core and sysinfo.cores_in_use() > 1:
        planned += [(name, device, f"{suffix}-1core", [*options, "--cores", "1"])
                    for name, device, suffix, options in list(planned) if device == "cpu"]
    done, failed = [], []
    for name, device, suffix, options in planned:
        label = f"{name}-{device}-{args.dtype}{suffix}"
        runs = [out / "processes" / f"{label}.p{k + 1}.json" for k in range(args.processes)]
        for k, path in enumerate(runs):
            cmd, env = time_command(args, name, device, options, path, peaks, run_id, check=k == 0)
            print(f"== {label} (process {k + 1} of {len(runs)}): {' '.join(cmd[1:])}", file=sys.stderr,
                  flush=True)
            if run_command(cmd, env) != 0:
                failed.append(label)
                break
        else:
            combined = results.combine_processes([results.read_result(path) for path in runs])
            output.write_json(out / f"{label}.json", combined)
            done.append({**combined, "_file": f"{label}.json"})
    if with_peer:
        path = out / PEER_FILE
        cmd = peer_command(args, path)
        print(f"== peer: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        if run_command(cmd, {**environment_for("torch"), "TROMPT_RUN_ID": run_id}) == 0:
            done.append(results.read_result(path))
        else:
            failed.append(path.stem)
    if not done:
        print("error: no backend produced a result", file=sys.stderr)
        return 1
    table = results.comparison_table(done, results.pick_baseline(done))
    scaling = results.scaling_lines(done)
    output.write_text(out / "bench_table.md", table + ("\n\n" + "\n".join(scaling) if scaling else "") + "\n")
    print()
    print(table)
    for line in scaling:
        print(line)
    print(f"\nwrote {out}/", file=sys.stderr)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def peer_wanted(args: argparse.Namespace, device_of: dict[str, str]) -> bool:
    """Whether this run times the peer too (see the module docstring); `--peer` where it cannot
    run is a one-line error before anything is timed."""
    if args.peer is False:
        return False
    if args.peer:
        if not peers.installed():
            raise ValueError(f"--peer: {peers.NOT_INSTALLED}")
        if args.dtype != "float32":
            raise ValueError(f"--peer: the pytorch-frame peer runs in float32 only, not in {args.dtype}")
        return True
    if args.backends or args.dtype != "float32" or "cpu" not in device_of.values():
        return False
    if not peers.installed():
        print(f"note: {peers.NOT_INSTALLED}; no peer row", file=sys.stderr)
        return False
    return True


def peer_command(args: argparse.Namespace, path: Path) -> list[str]:
    """The `bench peer` child process. Its steps take seconds, like the reference's: one warm-up
    step and one step per repeat."""
    return [sys.executable, "-m", "bench", "peer", "--data", args.data, "--batch-size", str(args.batch_size),
            "--json", str(path), "--force", "--seconds", str(args.reference_seconds), "--warmup", "1",
            "--steps", "1"]


def time_command(args: argparse.Namespace, name: str, device: str, options: list[str], path: Path,
                 peaks: dict[str, Path], run_id: str, check: bool) -> tuple[list[str], dict[str, str]]:
    """The `bench time` child process of one configuration, and its environment."""
    python = str(XLA_PYTHON) if device == "xla" and XLA_PYTHON.exists() else sys.executable
    is_ref = name == "reference"
    cmd = [python, "-m", "bench", "time", "--backend", name, "--device", device,
           "--dtype", args.dtype, "--data", args.data, "--batch-size", str(args.batch_size),
           "--json", str(path), "--force", *(["--check"] if check else []),
           "--seconds", str(args.reference_seconds if is_ref else args.seconds), *options]
    if is_ref:  # ~17 s and ~4.6 GB per step of 8 on a CPU: one warm-up step, one per repeat
        cmd += ["--warmup", "1", "--steps", "1"]
    if device in peaks:  # every result's floors from one measurement of the machine
        cmd += ["--machine-peaks", str(peaks[device])]
    env = {**environment_for(name), "TROMPT_RUN_ID": run_id}
    if device == "xla" and "PJRT_DEVICE" not in env:  # a TPU VM has /dev/accel*; else the CPU
        env["PJRT_DEVICE"] = "TPU" if list(Path("/dev").glob("accel*")) else "CPU"
    return cmd, env
