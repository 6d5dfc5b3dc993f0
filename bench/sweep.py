"""`bench sweep`: how the cost of a training step grows with the work, for every backend.

    python -m bench sweep [--backends torch,jax] [--device cpu] [--seconds 6] [--out results]

Two axes, each point timed by `bench time` in a fresh process (as `bench all` does, with its
per-backend environment and one measurement of the machine's peaks for every point):

    batch    the batch size B (--batch-sizes) at the original's column count C = 984
    columns  the column count C (--columns) at the original's batch size 8

The point at batch 8 and C = 984 lies on both axes; it is timed once and listed on each. A batch
other than 8 is not the original computation (the protocol trains at 8): these points measure
how the cost scales, not the protocol. For each backend and axis a least-squares line through
log(step time) against log(size) gives the exponent k of "step time ~ size^k" and its R²
(bench/sweep_view.py turns them into words, the table and the chart).

A point that runs out of memory, is refused (the child's exit code 2: bad input for that
backend), fails, or is skipped never stops the sweep; its status says which, in one line. The
reference is skipped where its memory, estimated from its largest measured point and the growth
of its (B, P, C, D) expansion, would pass the memory limit (on the CPU; on an accelerator its own
out-of-memory error is recorded); every child is stopped when its resident memory passes that
limit (--max-memory-gb), so one point cannot take the machine. The exit code is 0 unless a point
failed or no point produced a result.

Writes `sweep_<device>.{json,md,png}` into --out (runs/<run id>/ by default, untracked), and each
point's own `bench time` record under `sweep_<device>/`. The JSON holds:
    kind "sweep", device, device_name, dtype, data, config (n_prompts, d_model, n_cycles),
    git_commit, run_id, started_at, load_average_1min {before, after}, command, seconds,
    max_memory_gb, axes {batch: {values, n_columns}, columns: {values, batch_size}},
    points: [{backend, device, axis, batch_size, n_columns, original_batch, status, message,
              samples_per_sec, step_time_ms, compile_time_s, peak_memory_mb, peak_memory_kind,
              percent_of_compute_floor, unsteady, file}]   (numbers null unless status is "ok")
    fits: {backend: {axis: {x, exponent, intercept, r_squared, n_points, saturation_batch, law}}}
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import backends
from backends import spec
from bench import cli, output, results, run_all, sweep_view, sysinfo

DEFAULT_BATCH_SIZES = "8,32,128,512"
DEFAULT_COLUMNS = "128,492,984,1968,3936"
MEMORY_SHARE = 0.75  # default --max-memory-gb: this share of the machine's RAM
FREE_SHARE = 0.9  # the reference may also use at most this share of the memory free when it starts
POLL_S = 0.25  # how often a child's resident memory is read
# The reference keeps about two float32 copies of its (B, P, C, D) expansion per cell for the
# backward pass (docs/SPEC.md); 2 copies over-estimate the 4.6 GB measured at B=8, C=984.
REFERENCE_COPIES, PROCESS_MB = 2, 500.0
OOM_SIGNS = ("out of memory", "memoryerror", "resource_exhausted", "cannot allocate memory", "bad_alloc")


def size_list(text: str) -> list[int]:
    """"8,32,128" -> [8, 32, 128]: positive integers, sorted, each once."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sorted({cli.positive_int(part) for part in parts})


def machine_memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = spec.TromptConfig()
    p.add_argument("--backends", default=None, help="comma-separated subset (default: all installed)")
    p.add_argument("--device", default="cpu", help="the one device every backend runs on")
    p.add_argument("--dtype", default="float32", choices=spec.DTYPES)
    p.add_argument("--data", default="synthetic:small", help="synthetic:tiny|small|full (made at each width)")
    p.add_argument("--batch-sizes", type=size_list, default=size_list(DEFAULT_BATCH_SIZES),
                   help=f"the batch axis, at C={defaults.n_columns} (default {DEFAULT_BATCH_SIZES})")
    p.add_argument("--columns", type=size_list, default=size_list(DEFAULT_COLUMNS),
                   help=f"the column axis, at batch {spec.BATCH_SIZE} (default {DEFAULT_COLUMNS})")
    p.add_argument("--seconds", type=cli.positive_number, default=6.0, help="time budget per point")
    p.add_argument("--n-prompts", type=cli.positive_int, default=defaults.n_prompts)
    p.add_argument("--d-model", type=cli.positive_int, default=defaults.d_model)
    p.add_argument("--n-cycles", type=cli.positive_int, default=defaults.n_cycles)
    p.add_argument("--max-memory-gb", type=cli.positive_number,
                   default=round(MEMORY_SHARE * machine_memory_gb(), 1),
                   help=f"stop a point whose process passes this resident memory "
                        f"({100 * MEMORY_SHARE:.0f}%% of RAM)")
    p.add_argument("--point-timeout", type=cli.positive_number, default=900.0,
                   help="seconds per point at most")
    p.add_argument("--no-floors", action="store_true",
                   help="do not measure the machine's peaks or the floors")
    p.add_argument("--out", default=None, help="directory for the files (default: runs/<run id>/, untracked)")


# ---------------------------------------------------------------------------------------------
# One point in a child process


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a child process ended: its exit code, its last non-empty stderr line, and why this
    process stopped it ("memory", "timeout"), if it did."""

    returncode: int | None
    last_line: str
    stopped: str | None = None


Runner = Callable[[list[str], dict[str, str], float, float], Outcome]  # (cmd, env, timeout s, limit MB)


def resident_mb(pid: int) -> float:
    """A live process's resident memory (VmRSS), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def run_child(cmd: list[str], env: dict[str, str], timeout_s: float, limit_mb: float) -> Outcome:
    """Run `cmd`, stopping it when its resident memory passes `limit_mb` or it runs past `timeout_s`."""
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty child never blocks
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        start, stopped = time.monotonic(), None
        while True:
            try:
                child.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                if resident_mb(child.pid) > limit_mb:
                    stopped = "memory"
                elif time.monotonic() - start > timeout_s:
                    stopped = "timeout"
                if stopped:
                    child.kill()
                    child.wait()
                    break
        err.seek(0)
        lines = [line.strip() for line in err.read().splitlines() if line.strip()]
    return Outcome(child.returncode, lines[-1] if lines else "", stopped)


def status_of(outcome: Outcome, limit_gb: float, timeout_s: float) -> tuple[str, str]:
    """(status, one-line message) of a child that did not succeed."""
    last = outcome.last_line
    if outcome.stopped == "memory":
        return "out of memory", f"stopped: its memory passed {limit_gb:g} GB (--max-memory-gb)"
    if outcome.stopped == "timeout":
        return f"failed: ran over {timeout_s:g} s (--point-timeout)", last
    if outcome.returncode in (-9, 137):
        return "out of memory", last or "killed by SIGKILL (the kernel's out-of-memory killer)"
    if any(sign in last.lower() for sign in OOM_SIGNS):
        return "out of memory", last
    if outcome.returncode == 2:
        return f"refused: {last or 'exit code 2'}", last
    return f"failed: {last or f'exit code {outcome.returncode}'}", last


def reference_estimate_mb(batch: int, columns: int, cfg: spec.TromptConfig, dtype: str,
                          measured: list[tuple[int, int, float]]) -> float:
    """The reference's peak memory at (batch, columns): REFERENCE_COPIES copies of its (B, P, C, D)
    expansion in every cell, on top of the peak of its largest measured point less its own
    copies (else on top of PROCESS_MB for the process)."""
    itemsize = 8 if dtype == "float64" else 4

    def copies_mb(b: int, c: int) -> float:
        return REFERENCE_COPIES * b * cfg.n_prompts * c * cfg.d_model * cfg.n_cycles * itemsize / 2**20

    if measured:
        b0, c0, peak = max(measured, key=lambda m: m[0] * m[1])
        return peak + copies_mb(batch, columns) - copies_mb(b0, c0)
    return PROCESS_MB + copies_mb(batch, columns)


def free_memory_mb() -> float:
    """MemAvailable: what the machine can still give without swapping or killing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return float("inf")


# ---------------------------------------------------------------------------------------------


def plan(batch_sizes: list[int], columns: list[int]) -> dict[tuple[int, int], list[str]]:
    """{(batch, columns): the axes it lies on}, smallest work (B·C) first, so the reference's
    memory estimate for a large point comes from a measured smaller one."""
    work: dict[tuple[int, int], list[str]] = {}
    for b in batch_sizes:
        work.setdefault((b, spec.TromptConfig().n_columns), []).append("batch")
    for c in columns:
        work.setdefault((spec.BATCH_SIZE, c), []).append("columns")
    return dict(sorted(work.items(), key=lambda item: (item[0][0] * item[0][1], item[0])))


def command_text(args: argparse.Namespace) -> str:
    """The command that reproduces this sweep (every setting that differs from its default)."""
    defaults = vars(cli.build_parser().parse_args(["sweep"]))
    parts = ["python -m bench sweep"]
    for key, value in vars(args).items():
        if key in ("command", "out") or value == defaults.get(key) or value in (None, False):
            continue
        flag = "--" + key.replace("_", "-")
        text = ",".join(map(str, value)) if isinstance(value, list) else f"{value:g}" if isinstance(
            value, float) else str(value)
        parts.append(flag if value is True else f"{flag} {text}")
    return " ".join(parts + ([f"--out {args.out}"] if args.out else []))


def point_record(name: str, device: str, axis: str, batch: int, columns: int, status: str,
                 message: str | None = None, result: dict | None = None, file: str | None = None) -> dict:
    """One row of the sweep; `file` is the point's `bench time` record, relative to the JSON."""
    result = result or {}
    floors = result.get("floors") if isinstance(result.get("floors"), dict) else {}
    return {"backend": name, "device": device, "axis": axis, "batch_size": batch, "n_columns": columns,
            "original_batch": batch == spec.BATCH_SIZE, "status": status, "message": message,
            **{key: result.get(key) for key in ("samples_per_sec", "step_time_ms", "compile_time_s",
                                                "peak_memory_mb", "peak_memory_kind")},
            "percent_of_compute_floor": floors.get("percent_of_compute_floor"),
            "unsteady": result.get("unsteady"), "file": file}


def run(args: argparse.Namespace, runner: Runner | None = None) -> int:
    runner = runner or run_child
    names = args.backends.split(",") if args.backends else backends.available()
    unknown = [n for n in names if n not in backends.REGISTRY]
    if unknown or not names:
        raise ValueError(f"unknown backend(s) {', '.join(unknown) or repr(args.backends)}; "
                         f"choose from {', '.join(backends.REGISTRY)}")
    missing = [n for n in names if n not in backends.available()]
    if missing:
        raise ValueError(f"not installed here: {', '.join(missing)} (pip install -e '.[{missing[0]}]')")
    if not args.data.startswith("synthetic:"):
        raise ValueError(f"--data {args.data}: the column axis needs synthetic data, made at each width")
    cfg = spec.TromptConfig(n_prompts=args.n_prompts, d_model=args.d_model, n_cycles=args.n_cycles)
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or f"runs/{run_id}")
    points_dir = out / f"sweep_{args.device}"
    points_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    peaks = {} if args.no_floors else run_all.machine_peaks_once(points_dir, {args.device})
    limit_mb = args.max_memory_gb * 1024
    work = plan(args.batch_sizes, args.columns)

    points, device_names = [], []
    for name in names:
        measured: list[tuple[int, int, float]] = []  # the reference's (batch, columns, peak MB)
        for (batch, columns), axes in work.items():
            label = f"{name}-b{batch}-c{columns}"
            result, message = None, None
            estimate = reference_estimate_mb(batch, columns, cfg, args.dtype, measured)
            allowed = min(limit_mb, FREE_SHARE * free_memory_mb())
            if name == "reference" and args.device == "cpu" and estimate > allowed:
                status = (f"skipped: would need ~{estimate / 1024:.1f} GB, over the "
                          f"{allowed / 1024:.1f} GB allowed")
            else:
                path = points_dir / f"{label}.json"
                cmd = child_command(args, name, batch, columns, path, peaks.get(args.device))
                print(f"== sweep {label}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
                env = {**run_all.environment_for(name), "TROMPT_RUN_ID": run_id}
                outcome = runner(cmd, env, args.point_timeout, limit_mb)
                if outcome.returncode == 0 and outcome.stopped is None:
                    try:
                        result = results.read_result(path)
                        status = "ok"
                    except ValueError as e:
                        status, message = f"failed: {run_all.first_line(e)}", run_all.first_line(e)
                else:
                    status, message = status_of(outcome, args.max_memory_gb, args.point_timeout)
            if result is not None:
                device_names.append(result.get("device_name"))
                if result.get("peak_memory_mb"):
                    measured.append((batch, columns, float(result["peak_memory_mb"])))
            print(f"   {label}: {status}" + (f", {result['samples_per_sec']:.4g} samples/s, "
                                              f"{result['step_time_ms']:.4g} ms/step" if result else ""),
                  file=sys.stderr, flush=True)
            file = f"{points_dir.name}/{label}.json" if result else None
            points += [point_record(name, args.device, axis, batch, columns, status, message, result, file)
                       for axis in axes]

    record = {
        "kind": "sweep", "device": args.device,
        "device_name": next((d for d in device_names if d), "unknown machine"),
        "dtype": args.dtype, "data": args.data,
        "config": {k: v for k, v in cfg.to_dict().items() if k != "n_columns"},
        "git_commit": sysinfo.git_commit(), "run_id": run_id, "started_at": started_at,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "command": command_text(args), "seconds": args.seconds, "max_memory_gb": args.max_memory_gb,
        "axes": {"batch": {"values": args.batch_sizes, "n_columns": spec.TromptConfig().n_columns},
                 "columns": {"values": args.columns, "batch_size": spec.BATCH_SIZE}},
        "points": points,
        "fits": sweep_view.fits(points),
    }
    stem = out / f"sweep_{args.device}"
    text = sweep_view.markdown(record, f"{stem.name}.png")
    output.write_json(stem.with_suffix(".json"), record)
    output.write_text(stem.with_suffix(".md"), text)
    sweep_view.write_chart(record, stem.with_suffix(".png"))
    print(text)
    print(f"wrote {stem}.{{json,md,png}}", file=sys.stderr)
    failed = [p for p in points if p["status"].startswith("failed")]
    if not any(p["status"] == "ok" for p in points):
        print("error: no point produced a result", file=sys.stderr)
        return 1
    return 1 if failed else 0


def child_command(args: argparse.Namespace, name: str, batch: int, columns: int, path: Path,
                  peaks: Path | None) -> list[str]:
    """`bench time` of one point, as `bench all` builds it (without --check: this is about cost)."""
    cmd = [sys.executable, "-m", "bench", "time", "--backend", name, "--device", args.device,
           "--dtype", args.dtype, "--data", args.data, "--batch-size", str(batch),
           "--n-columns", str(columns), "--n-prompts", str(args.n_prompts), "--d-model", str(args.d_model),
           "--n-cycles", str(args.n_cycles),
           "--seconds", str(args.seconds), "--json", str(path), "--force", "--quiet"]
    if name == "reference":  # ~9 s and ~4.6 GB per step of 8 on a CPU: one warm-up step, one per repeat
        cmd += ["--warmup", "1", "--steps", "1"]
    if args.no_floors:
        cmd.append("--no-floors")
    elif peaks is not None:  # every point's floors from one measurement of the machine
        cmd += ["--machine-peaks", str(peaks)]
    return cmd
