"""`make bench`: every installed backend timed at batch 8 in one run, one fresh process each
(so one framework's threads, allocator and JIT caches cannot slow another), each checked on the
very configuration it timed, then one table with the speed of each as a multiple of the
reference's, measured in this same run.

Results go to an untracked folder of their own (runs/<run id>/ by default), so running the main
job never changes the repository; the published results/ folder changes only when asked
(`--out results`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from pathlib import Path

import backends
from backends import spec
from bench import cli, output, results

# Further configurations worth a row of their own: torch's fastest exact one compiles the step
# (compilation, ~1 minute on 2 cores, is reported apart as the first step's time).
EXTRA_RUNS = {"torch": [("-compile", ["--opt", "compile=true"])]}
# glibc otherwise returns the fast backends' per-step buffers (<= 24 MB) to the kernel and maps
# them again every step. 32 MiB as the mmap threshold still lets the reference's ~0.5 GB buffers
# go back to the system. Measured to slow the reference (docs/REPORT.md), so it runs without.
FAST_BACKEND_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
                    "MALLOC_TOP_PAD_": "268435456"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backends", default=None, help="comma-separated subset (default: all installed)")
    p.add_argument("--device", default="cpu", help="cpu, or the accelerator every backend should use")
    p.add_argument("--data", default="synthetic:small")
    p.add_argument("--batch-size", type=cli.positive_int, default=spec.BATCH_SIZE)
    p.add_argument("--dtype", default="float32", choices=spec.DTYPES)
    p.add_argument("--seconds", type=cli.positive_number, default=15.0, help="time budget per backend")
    p.add_argument("--reference-seconds", type=cli.positive_number, default=40.0,
                   help="time budget for the reference")
    p.add_argument("--out", default=None, help="directory for the JSON files and the table "
                   "(default: runs/<run id>/, untracked)")


def environment_for(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FAST_BACKEND_ENV}
    return env if name == "reference" else {**env, **FAST_BACKEND_ENV}


def run(args: argparse.Namespace) -> int:
    names = args.backends.split(",") if args.backends else backends.available()
    unknown = [n for n in names if n not in backends.REGISTRY]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(backends.REGISTRY)}")
    missing = [n for n in backends.REGISTRY if n not in backends.available()]
    if missing:
        print(f"not installed here, skipped: {', '.join(missing)}", file=sys.stderr)
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or f"runs/{run_id}")
    out.mkdir(parents=True, exist_ok=True)
    done, failed = [], []
    for name in names:
        for suffix, options in [("", [])] + EXTRA_RUNS.get(name, []):
            label = f"{name}-{args.device}-{args.dtype}{suffix}"
            path = out / f"{label}.json"
            is_ref = name == "reference"
            cmd = [sys.executable, "-m", "bench", "time", "--backend", name, "--device", args.device,
                   "--dtype", args.dtype, "--data", args.data, "--batch-size", str(args.batch_size),
                   "--json", str(path), "--force", "--check",
                   "--seconds", str(args.reference_seconds if is_ref else args.seconds), *options]
            if is_ref:  # ~17 s and ~4.6 GB per step of 8 on a CPU: one warm-up step, one per repeat
                cmd += ["--warmup", "1", "--steps", "1"]
            print(f"== {label}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
            env = {**environment_for(name), "TROMPT_RUN_ID": run_id}
            if subprocess.run(cmd, env=env).returncode == 0:
                done.append(results.read_result(path))
            else:
                failed.append(label)
    if not done:
        print("error: no backend produced a result", file=sys.stderr)
        return 1
    table = results.comparison_table(done, results.pick_baseline(done))
    output.write_text(out / "bench_table.md", table + "\n")
    print()
    print(table)
    print(f"\nwrote {out}/", file=sys.stderr)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
