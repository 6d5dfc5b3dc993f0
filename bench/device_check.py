"""`make device-check` (`python -m bench.device_check`): every accelerator check of the project in
one command, on a machine with a CUDA GPU or a TPU, within a time budget (8 minutes by default):

- `bench check` of every backend and configuration the device runs: torch on CUDA (default,
  float64, compile, CUDA graphs, fp16 AMP, bf16 AMP where the GPU has native bf16 (sm_80+), the
  variants r2-r4 in float64, the original loop, foreach AdamW), the reference on CUDA, JAX on the
  GPU or TPU (float32, lower matmul precision, float64: checked on a GPU, refused on a TPU), MLX's
  GPU and tinygrad's CUDA device where they can use it, torch_xla on a TPU when `.venv-xla` exists;
- the torch ladder on CUDA at a small time budget per rung (`bench ladder --device cuda --seconds 2`);
- with two or more devices: `bench check` under torchrun (ddp, cells) and JAX's multi-device modes,
  each over two devices;
- minitorch's CUDA kernels on the real GPU: tests/minitorch/cuda_sim_check.py run directly without
  NUMBA_ENABLE_CUDASIM (its pytest wrapper, test_minitorch_cuda.py, always sets it to 1, which
  selects numba's simulator, so it cannot test a GPU).

Checks run a few at a time (they are not timed; JAX is told not to preallocate the GPU, so they
fit side by side); the ladder, which is timed, and anything on a TPU (one process may own it) run
alone. Writes <out>/ (default results/<device name slug>/): each check's JSON, each command's log
under logs/, device_check.json (every command, exit code, time, status) and summary.md. Exits 1
if any check failed, timed out or could not start within the budget; on a machine with neither a
CUDA GPU nor a TPU it says so in one line and exits 0. Machine detection (bench/device_machine.py)
asks nvidia-smi and the TPU device files first, and imports a framework only in child processes
(a process that touches a TPU holds it until it ends).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import output, run_all, sysinfo
from bench.device_machine import JAX_ENV, PY, ROOT, Machine, detect

BUDGET_S = 480.0
JOBS = 4
CHECK_TIMEOUT_S = 150.0
COMPILE_TIMEOUT_S = 300.0  # torch.compile / tinygrad / XLA compile on a cold cache
LADDER_TIMEOUT_S = 420.0
LADDER_SECONDS = "2"  # per rung, all 3 repeats: enough to see each rung run, not to publish
MULTI = 2  # devices the multi-device checks use (cells splits the check's 3 cells, so not more)

# torch on CUDA: (dtype, options). The variants run in float64, where 1e-9 leaves a defect nowhere
# to hide; bf16 AMP is added where native (`Machine.bf16`).
TORCH_CUDA = (
    ("float32", {}),
    ("float64", {}),
    ("float32", {"compile": "true"}),
    ("float32", {"cuda_graphs": "true"}),
    ("float32", {"amp": "fp16"}),
    ("float64", {"variant": "r2"}),
    ("float64", {"variant": "r3"}),
    ("float64", {"variant": "r4"}),
    ("float32", {"optimizer": "default", "host_loop": "true"}),
    ("float32", {"optimizer": "foreach"}),
)
SLOW_OPTIONS = {"compile", "cuda_graphs"}  # these compile or capture first


# ---------------------------------------------------------------------------------------------
# The plan


@dataclasses.dataclass
class Step:
    """One command. kind: "check" (`bench check`, its JSON at <out>/<key>.json), "refusal" (must
    exit 2 with one line), "ladder" (its JSON at <out>/ladder_torch_cuda.json) or "script"."""

    key: str
    kind: str
    argv: list[str]
    timeout_s: float = CHECK_TIMEOUT_S
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    unset: tuple[str, ...] = ()
    alone: bool = False  # run with nothing beside it (timed, or a TPU that one process owns)

    def record_path(self, out: Path) -> Path | None:
        """The JSON the command writes and its verdict is read from."""
        return {"check": out / f"{self.key}.json", "ladder": out / "ladder_torch_cuda.json"}.get(self.kind)

    def shown(self) -> str:
        """The command as a person would type it (no interpreter path, no output path)."""
        words, skip = [], False
        for word in self.argv:
            if skip:
                skip = False
                continue
            if word in ("--json", "--out"):
                skip = True
                continue
            if word != "--force":
                words.append("python" if word == PY else word.replace(f"{ROOT}{os.sep}", ""))
        prefix = " ".join(f"{k}={v}" for k, v in self.env.items() if k not in JAX_ENV)
        return (prefix + " " if prefix else "") + " ".join(words)


def check_step(out: Path, backend: str, device: str, dtype: str = "float32", options: dict | None = None,
               launcher: tuple[str, ...] = (PY,), kind: str = "check", **extra) -> Step:
    options = options or {}
    key = "-".join(["check", backend, device, dtype, *(f"{k}-{v}" for k, v in options.items())])
    argv = [*launcher, "-m", "bench", "check", "--backend", backend, "--device", device, "--dtype", dtype,
            *[word for k, v in options.items() for word in ("--opt", f"{k}={v}")]]
    if kind == "check":
        argv += ["--json", str(out / f"{key}.json"), "--force"]
    slow = SLOW_OPTIONS & set(options) or backend in ("jax", "tinygrad") or len(launcher) > 1
    extra.setdefault("timeout_s", COMPILE_TIMEOUT_S if slow else CHECK_TIMEOUT_S)
    return Step(key, kind, argv, **extra)


def build_plan(machine: Machine, out: Path) -> list[Step]:
    """Every command this machine can run, in order: the checks, then what must run alone."""
    steps: list[Step] = []
    if machine.can("torch", "cuda"):
        configs = [*TORCH_CUDA, *([("float32", {"amp": "bf16"})] if machine.bf16 else [])]
        steps += [check_step(out, "torch", "cuda", dtype, options) for dtype, options in configs]
    if machine.can("reference", "cuda"):
        steps += [check_step(out, "reference", "cuda", dtype) for dtype in ("float32", "float64")]
    for device in ("gpu", "tpu"):
        if not machine.can("jax", device):
            continue
        alone = device == "tpu"
        jax = {"env": dict(JAX_ENV), "alone": alone}
        steps += [check_step(out, "jax", device, **jax),
                  check_step(out, "jax", device, options={"precision": "default"}, **jax),
                  check_step(out, "jax", device, "float64", kind="check" if device == "gpu" else "refusal",
                             **jax)]
        if (machine.jax_gpus if device == "gpu" else len(machine.tpus)) >= MULTI:
            steps += [check_step(out, "jax", device, options={"parallel": mode, "n_devices": MULTI}, **jax)
                      for mode in ("pmap", "sharding", "cells")]
    if machine.can("mlx", "gpu"):
        steps += [check_step(out, "mlx", "gpu"), check_step(out, "mlx", "gpu", options={"compile": "false"})]
    for device, dtypes in (("cuda", ("float32", "float64")), ("metal", ("float32",))):
        if machine.can("tinygrad", device):
            steps += [check_step(out, "tinygrad", device, dtype) for dtype in dtypes]
    if machine.tpus and machine.xla_python:
        steps.append(check_step(out, "torch", "xla", launcher=(machine.xla_python,),
                                env={"PJRT_DEVICE": "TPU"}, alone=True, timeout_s=COMPILE_TIMEOUT_S))
    if machine.gpus and machine.minitorch:
        steps.append(Step("minitorch-cuda", "script", [PY, str(ROOT / "tests/minitorch/cuda_sim_check.py")],
                          COMPILE_TIMEOUT_S, unset=("NUMBA_ENABLE_CUDASIM",)))
    if machine.can("torch", "cuda") and machine.cuda_devices >= MULTI:
        torchrun = (PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={MULTI}")
        steps += [check_step(out, "torch", "cuda", options={"parallel": mode}, launcher=torchrun)
                  for mode in ("ddp", "cells")]
    if machine.can("torch", "cuda"):
        steps.append(Step("ladder-torch-cuda", "ladder",
                          [PY, "-m", "bench", "ladder", "--device", "cuda", "--seconds", LADDER_SECONDS,
                           "--out", str(out)], LADDER_TIMEOUT_S, alone=True))
    return steps


# ---------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class Outcome:
    returncode: int | None = None
    seconds: float = 0.0
    output: str = ""  # stdout then stderr
    timed_out: bool = False
    not_run: str | None = None  # why the command never started


def environment(step: Step) -> dict[str, str]:
    backend = step.argv[step.argv.index("--backend") + 1] if "--backend" in step.argv else "torch"
    env = {**run_all.environment_for(backend), **step.env}
    for name in step.unset:
        env.pop(name, None)
    return env


def run_step(step: Step, out: Path, deadline: float) -> Outcome:
    """Run one command within its timeout and what is left of the budget; its log goes to logs/."""
    left = deadline - time.monotonic()
    if left < 5:
        return Outcome(not_run="the time budget was spent")
    if step.record_path(out):
        step.record_path(out).unlink(missing_ok=True)  # a stale verdict must not pass for this run's
    start = time.monotonic()
    try:
        # A session of its own, so that a timeout also ends what the command started (torchrun's
        # ranks, compile workers), which would otherwise keep the GPU busy for the next checks.
        proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=environment(step), cwd=ROOT, start_new_session=True)
    except OSError as e:
        outcome = Outcome(None, 0.0, str(e), not_run=f"could not start: {e}")
    else:
        try:
            stdout, stderr = proc.communicate(timeout=min(step.timeout_s, left))
            outcome = Outcome(proc.returncode, time.monotonic() - start, stdout + stderr)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            outcome = Outcome(None, time.monotonic() - start, stdout + stderr, timed_out=True)
    output.write_text(out / "logs" / f"{step.key}.log", f"$ {' '.join(step.argv)}\n{outcome.output}")
    return outcome


def run_plan(steps: list[Step], out: Path, budget_s: float, jobs: int,
             report=lambda step, outcome: None) -> list[Outcome]:
    """The steps that may share the machine `jobs` at a time, then the others one by one."""
    deadline = time.monotonic() + budget_s
    out.mkdir(parents=True, exist_ok=True)
    outcomes: dict[int, Outcome] = {}

    def one(i: int) -> None:
        outcomes[i] = run_step(steps[i], out, deadline)
        report(steps[i], outcomes[i])

    shared = [i for i, s in enumerate(steps) if not s.alone]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, shared))
    for i, step in enumerate(steps):
        if step.alone:
            one(i)
    return [outcomes[i] for i in range(len(steps))]


# ---------------------------------------------------------------------------------------------
# Verdicts and the summary


def read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def evaluate(step: Step, outcome: Outcome, out: Path) -> tuple[bool, str, float | None]:
    """(passed, status, worst norm-wise deviation or None) of one command."""
    if outcome.not_run:
        return False, f"not run: {outcome.not_run}", None
    if outcome.timed_out:
        return False, f"timed out after {outcome.seconds:.0f} s", None
    rc = outcome.returncode
    if step.kind == "refusal":
        if rc == 2:
            return True, f"refused as expected: {last_line(outcome.output)}", None
        return False, f"FAIL: expected a one-line refusal (exit 2), got exit {rc}", None
    if step.kind == "check":
        record = read_json(step.record_path(out))
        if record and rc in (0, 1) and "verdict" in record:
            verdict = str(record["verdict"])
            return rc == 0 and verdict != "FAIL", verdict, record.get("worst")
        return False, f"error (exit {rc}): {last_line(outcome.output)}", None
    if step.kind == "ladder":
        record = read_json(step.record_path(out))
        if rc != 0 or not record:
            return False, f"error (exit {rc}): {last_line(outcome.output)}", None
        rows = record.get("rows", [])
        verdicts = {r["key"]: (r.get("equivalence") or {}).get("verdict")
                    for r in rows if not r.get("skipped")}
        failed = [k for k, v in verdicts.items() if v == "FAIL"]
        failed += [r["key"] for r in rows if str(r.get("skipped", "")).startswith("torchrun")]
        inexact = sum(1 for v in verdicts.values() if str(v).startswith("not exact"))
        skipped = len(rows) - len(verdicts)
        counts = f"{len(verdicts)} rungs checked ({inexact} not exact), {skipped} skipped"
        if failed:
            return False, f"FAIL: {', '.join(failed)}; {counts}", None
        return True, f"pass: {counts}", None
    if rc == 0:
        return True, "pass", None
    return False, f"FAIL (exit {rc}): {last_line(outcome.output)}", None


def summarise(machine: Machine, steps: list[Step], outcomes: list[Outcome], out: Path,
              seconds: float) -> tuple[dict, str]:
    """(device_check.json's record, summary.md's text)."""
    rows = []
    for step, outcome in zip(steps, outcomes):
        ok, status, worst = evaluate(step, outcome, out)
        rows.append({"key": step.key, "kind": step.kind, "command": step.shown(), "ok": ok, "status": status,
                     "worst": worst, "returncode": outcome.returncode, "seconds": round(outcome.seconds, 1),
                     "timed_out": outcome.timed_out})
    problems = machine.problems()
    failed = [r["key"] for r in rows if not r["ok"]] + [f"problem: {p}" for p in problems]
    record = {"device_name": machine.name, "machine": dataclasses.asdict(machine),
              "git_commit": sysinfo.git_commit(),
              "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "seconds": round(seconds, 1), "passed": not failed, "failed": failed, "problems": problems,
              "steps": rows}
    table = output.markdown_table(
        ["check", "status", "worst dev.", "s", "command"],
        [[r["key"], ("" if r["ok"] else "**") + r["status"].replace("|", "/") + ("" if r["ok"] else "**"),
          "" if r["worst"] is None else f"{r['worst']:.1e}", f"{r['seconds']:.0f}", f"`{r['command']}`"]
         for r in rows], "lllrl")
    passed = sum(r["ok"] for r in rows)
    lines = [f"# Device check: {machine.name}", "",
             f"`python -m bench.device_check` at commit {record['git_commit']}, {record['finished']}: "
             f"{len(rows)} commands in {seconds:.0f} s, {passed} passed, {len(rows) - passed} did not"
             + (f"; {len(problems)} problem(s) below" if problems else "") + ".", "", table]
    lines += ["", *[f"- **problem**: {p}" for p in problems]] if problems else []
    not_here = machine.not_here()
    lines += ["", "Not run here (the backend cannot use this accelerator):", "",
              *[f"- {line}" for line in not_here]] if not_here else []
    lines += ["", "Status: `pass`, or `not exact: ...` for an option that changes the computation (AMP, "
              "lower matmul precision), is a passed check; `bench check --help` says what is compared. "
              "Each command's output is in logs/<check>.log."]
    return record, "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.device_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None,
                   help="folder for the results (default: results/<device name slug>/)")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for every command together")
    p.add_argument("--jobs", type=int, default=JOBS, help="checks run side by side (TPU work runs alone)")
    p.add_argument("--dry-run", action="store_true", help="print the commands this machine would run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.monotonic()
    machine = detect()
    if not machine.accelerated:
        seen = (f"; {machine.tpu_hint} suggests a TPU but JAX cannot use one"
                f"{': ' + machine.why['jax'].get('tpu', '') if machine.why.get('jax', {}).get('tpu') else ''}"
                if machine.tpu_hint else "")
        print(f"device-check: no CUDA GPU (nvidia-smi lists none) and no TPU here{seen}; nothing to check")
        return 0
    out = Path(args.out or Path("results") / machine.slug).resolve()
    steps = build_plan(machine, out)
    found = ", ".join(f"{n} {'/'.join(d)}" for n, d in machine.usable.items())
    print(f"device-check on {machine.name}: {len(steps)} commands, budget {args.budget_s:.0f} s; "
          f"devices: {found}", file=sys.stderr, flush=True)
    for problem in machine.problems():
        print(f"problem: {problem}", file=sys.stderr)
    if args.dry_run:
        print("\n".join(step.shown() for step in steps))
        return 0

    def report(step: Step, outcome: Outcome) -> None:
        ok, status, _ = evaluate(step, outcome, out)
        print(f"{'ok ' if ok else 'BAD'} {step.key}: {status} ({outcome.seconds:.0f} s)", file=sys.stderr,
              flush=True)

    outcomes = run_plan(steps, out, args.budget_s - (time.monotonic() - start), args.jobs, report)
    record, summary = summarise(machine, steps, outcomes, out, time.monotonic() - start)
    output.write_json(out / "device_check.json", record)
    output.write_text(out / "summary.md", summary)
    print(summary)
    print(f"wrote {out}/; {'all passed' if record['passed'] else 'failed: ' + ', '.join(record['failed'])}",
          file=sys.stderr)
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
