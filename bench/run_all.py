"""`make bench`: every installed backend timed at batch 8 in one run, one fresh process each
(so one framework's threads, allocator and JIT caches cannot slow another), then one table with
the speed-up of each against the reference measured in this same run."""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from pathlib import Path

import backends
from bench import results

# Further configurations worth a row of their own: torch's fastest exact one compiles the step
# (compilation, ~1 minute on 2 cores, is reported apart as the first step's time).
EXTRA_RUNS = {"torch": [("-compile", ["--opt", "compile=true"])]}


def run_all(args: argparse.Namespace) -> int:
    names = args.backends.split(",") if args.backends else backends.available()
    unknown = [n for n in names if n not in backends.REGISTRY]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; "
                         f"available: {', '.join(backends.available())}")
    missing = [n for n in backends.REGISTRY if n not in backends.available()]
    if missing:
        print(f"not installed or not implemented here, skipped: {', '.join(missing)}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    env = {**os.environ, "TROMPT_RUN_ID": run_id}
    done, failed = [], []
    for name in names:
        for suffix, options in [("", [])] + EXTRA_RUNS.get(name, []):
            label = f"{name}-cpu-{args.dtype}{suffix}"
            path = out / f"{label}.json"
            is_ref = name == "reference"
            cmd = [sys.executable, "-m", "bench", "time", "--backend", name, "--dtype", args.dtype,
                   "--data", args.data, "--batch-size", str(args.batch_size), "--json", str(path), "--check",
                   "--seconds", str(args.reference_seconds if is_ref else args.seconds), *options]
            if is_ref:  # ~17 s and ~4.6 GB per step of 8: one warm-up step, one step per repeat
                cmd += ["--warmup", "1", "--steps", "1"]
            print(f"== {label}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
            if subprocess.run(cmd, env=env).returncode == 0:
                done.append(results.read_result(path))
            else:
                failed.append(label)
    if not done:
        print("error: no backend produced a result", file=sys.stderr)
        return 1
    baseline = next((r for r in done if r["backend"] == "reference"), None)
    table = results.markdown_table(done, baseline)
    (out / "bench_table.md").write_text(table + "\n")
    print()
    print(table)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
