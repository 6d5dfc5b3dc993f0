"""`bench profile`: where a backend's steady training steps spend their CPU time, per thread.

Linux `perf` samples this very process while it trains (after a warm-up, so compilation is not
in the profile), and the samples are grouped by thread and by the library (perf's "dso") the
sampled instruction belongs to. The library says what kind of work ran: libopenblas is GEMM,
libmlx and MLX's compiled `lib...f4...so` kernels its element-wise work, "JIT code" the kernels a
compiler generated at run time (XLA, tinygrad), [kernel] the operating system (page faults,
scheduling, a BLAS thread yielding while it waits). A thread's share of all samples says how
busy it kept a core.

With `--ops` the framework profiles itself instead (where its trainer offers `op_times`: JAX on
the CPU, torch, the reference): every op of the steady steps with its time per step, most
expensive first. JAX's are XLA's compiled ops (fusions, dots, custom calls); torch's are ATen ops,
custom ops and, under compile=true, inductor's generated kernels (torch.profiler).

    python -m bench profile --backend mlx --seconds 12
    python -m bench profile --backend jax --ops
    python -m bench profile --backend torch --ops --opt compile=true --opt variant=r5-fused
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import backends
from backends import spec
from bench import cli, timing

SAMPLE_HZ = 499  # below perf's default rate: fewer interruptions of the work being measured
TOP_LIBRARIES = 8
# `perf script -F tid,ip,sym,dso` prints a sample on one line ("tid ip symbol (path)"), or, when
# call chains were recorded, its thread id alone and then one line per frame ("ip symbol (path)").
SAMPLE = re.compile(r"^\s*(?P<tid>\d+)\s+[0-9a-f]+\s.*\((?P<dso>[^()]*)\)\s*$")
HEADER = re.compile(r"^\s*(?P<tid>\d+)\s*$")
FRAME = re.compile(r"^\s+[0-9a-f]+\s.*\((?P<dso>[^()]*)\)\s*$")


def library_name(path: str) -> str:
    """A readable library name for perf's dso path: run-time generated code is "JIT code"."""
    name = path.rsplit("/", 1)[-1]
    if name.startswith("perf-") and name.endswith(".map") or name in ("[unknown]", "[anon]"):
        return "JIT code"
    if name.startswith("[kernel"):
        return "[kernel]"
    return name if len(name) <= 48 else name[:45] + "..."  # MLX names compiled kernels by their ops


def thread_shares(perf_script: str) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """[(thread id, share of all samples, [(library, share of the thread's samples)])], busiest
    thread first, from the text of `perf script -F tid,ip,sym,dso` (call chains allowed: only the
    first frame of each sample counts)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    thread = None  # the thread whose first frame comes next (call-chain form)
    for line in perf_script.splitlines():
        if sample := SAMPLE.match(line):
            counts[sample["tid"]][library_name(sample["dso"])] += 1
        elif header := HEADER.match(line):
            thread = header["tid"]
        elif thread is not None and (frame := FRAME.match(line)):
            counts[thread][library_name(frame["dso"])] += 1
            thread = None  # the caller frames below it are not where the time went
    total = sum(sum(c.values()) for c in counts.values())
    out = []
    for tid, libraries in sorted(counts.items(), key=lambda item: -sum(item[1].values())):
        n = sum(libraries.values())
        out.append((tid, n / total, [(name, k / n) for name, k in libraries.most_common(TOP_LIBRARIES)]))
    return out


def op_table(ops: list[tuple[str, float, int]], steps: int, top: int, basis: str = "") -> str:
    """Markdown table of the `top` most expensive ops: ms per step, share of all ops' time, calls
    per step; the ops left out are summed in a last row. `basis` says what the times are."""
    total = sum(seconds for _, seconds, _ in ops) or 1.0
    lines = [f"ops' time: {1e3 * total / steps:.2f} ms per step" + (f" ({basis})" if basis else ""), "",
             "| op | ms/step | share | calls/step |", "|---|---:|---:|---:|"]
    def row(name: str, seconds: float, calls: str) -> str:
        return f"| {name} | {1e3 * seconds / steps:.3f} | {100 * seconds / total:.1f}% | {calls} |"

    lines += [row(name, seconds, f"{calls / steps:g}") for name, seconds, calls in ops[:top]]
    if ops[top:]:
        lines.append(row(f"{len(ops) - top} other ops", sum(t for _, t, _ in ops[top:]), ""))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    cli.add_backend_args(p)
    cli.add_trainer_args(p)
    cli.add_data_args(p)
    p.add_argument("--seconds", type=cli.positive_number, default=12.0, help="how long perf samples")
    p.add_argument("--warmup", type=cli.positive_int, default=3, help="steps before sampling starts")
    p.add_argument("--steps-per-run", type=cli.positive_int, default=16,
                   help="batches per Trainer.run call, as in a timed repeat (JAX fuses them into scans)")
    p.add_argument("--threads", type=cli.positive_int, default=4, help="threads shown, busiest first")
    p.add_argument("--ops", action="store_true", help="the framework's own per-op profile (JAX on the "
                   "CPU, torch, the reference) of --ops-steps steps instead of perf's per-library samples")
    p.add_argument("--ops-steps", type=cli.positive_int, default=128,
                   help="steps --ops traces (JAX: two of its default 64-step scans)")
    p.add_argument("--top", type=cli.positive_int, default=25, help="ops --ops shows, most expensive first")


def run(args: argparse.Namespace) -> int:
    import os

    from bench.commands import load_data

    if not args.ops and shutil.which("perf") is None:
        raise ValueError("bench profile needs Linux perf on PATH (apt-get install linux-perf)")
    backend = backends.load(args.backend, device=args.device, dtype=args.dtype)
    options = backend.parse_options(cli.parse_options(args.opt, args.parallel))
    dataset, cfg = load_data(args)
    trainer = backend.trainer(spec.init_params(cfg, args.seed, args.dtype), cfg, dataset.x_train,
                              dataset.y_train, **options)
    stream = timing.batch_stream(len(dataset.x_train), args.batch_size, args.seed)
    for _ in range(max(args.warmup, trainer.min_warmup_steps())):
        trainer.run([next(stream)])
    trainer.sync()
    load_before = os.getloadavg()[0]
    if args.ops:
        ops = trainer.op_times([next(stream) for _ in range(args.ops_steps)])
        if ops is None:
            raise ValueError(f"backend {args.backend!r} on {args.device} has no per-op profile; "
                             "run without --ops for perf's")
        print(f"{args.backend} {args.device} {args.dtype} {options}: {args.ops_steps} steps traced; "
              f"1-min load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
        print(op_table(ops, args.ops_steps, args.top, trainer.op_time_basis))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        data = str(Path(folder) / "perf.data")
        record = subprocess.Popen(["perf", "record", "-q", "-F", str(SAMPLE_HZ), "-p", str(os.getpid()),
                                   "-o", data, "--", "sleep", str(args.seconds)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        steps = 0
        while record.poll() is None:  # train while perf samples this process
            trainer.run([next(stream) for _ in range(args.steps_per_run)])
            trainer.sync()
            steps += args.steps_per_run
        if record.returncode != 0:
            tail = (record.stderr.read().strip().splitlines() or [f"exit code {record.returncode}"])[-1]
            raise ValueError(f"perf record failed: {tail}")
        script = subprocess.run(["perf", "script", "-i", data, "-F", "tid,ip,sym,dso"], capture_output=True,
                                text=True, check=False).stdout
    print(f"{args.backend} {args.device} {args.dtype} {options}: {steps} steps in {args.seconds:g} s "
          f"sampled at {SAMPLE_HZ} Hz; 1-min load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    for tid, share, libraries in thread_shares(script)[:args.threads]:
        print(f"thread {tid}: {100 * share:.1f}% of the samples")
        for name, part in libraries:
            print(f"  {100 * part:5.1f}%  {name}")
    return 0
