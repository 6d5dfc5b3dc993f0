"""Time training steps of one trainer: warm-up (compile) apart, then a median over repeats.

Rules every figure of the project follows:
- the clock stops only after `trainer.sync()`, so queued device work is counted;
- warm-up runs every batch shape the timed region will see (the epoch's short last batch too,
  without stepping), so no compilation or recompilation lands inside a timed repeat;
- samples are counted from the batches actually run (a short batch counts its own rows);
- repeats whose rates spread by more than SPREAD_LIMIT are flagged, in the output and the JSON.

`measure()` is the loop alone, given a trainer, a batch stream and a clock (tests drive it with
fakes); `time_training()` builds the backend's trainer and records everything about the run.
"""

from __future__ import annotations

import datetime
import itertools
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

import backends
from backends import data as data_mod
from backends import spec
from backends.spec import TromptConfig
from bench import sysinfo

SPREAD_LIMIT = 1.5  # fastest / slowest repeat above this: the machine was not steady
MIN_TIMED_STEPS = 3  # per repeat; a budget that allows fewer says so
CONTENDED_CORES = 0.25  # other processes kept more than a quarter of a core busy while timing
# Environment variables that change how fast a process runs; recorded with every result.
ENVIRONMENT_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                    "OPENBLAS_L2_SIZE", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                    "MALLOC_TOP_PAD_", "XLA_FLAGS", "TROMPT_MLX_BLAS", "JAX_PLATFORMS")


def batch_stream(n_train: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """The training order of the protocol, epoch after epoch, as an endless stream of batches."""
    for epoch in itertools.count():
        yield from data_mod.epoch_batches(n_train, batch_size, epoch, seed)


def other_shapes(n_train: int, batch_size: int) -> list[np.ndarray]:
    """Batches of the shapes the stream yields besides the full one: the epoch's short last batch.
    Warm-up compiles them through `trainer.gradients` (the same loss, forward and backward, as the
    step, for compilers that specialise on shapes such as torch.compile with dynamic=False)
    without taking an optimizer step, so the training trajectory stays the protocol's."""
    short = n_train % batch_size
    return [np.arange(short, dtype=np.int64)] if short else []


def measure(trainer: backends.Trainer, stream: Iterator[np.ndarray], warmup: int, repeats: int,
            steps: int | None, seconds: float, shapes: list[np.ndarray] = (),
            clock: Callable[[], float] = time.perf_counter,
            progress: Callable[[str], None] | None = None,
            cpu_probe: Callable[[], tuple[float, float]] | None = None) -> dict:
    """Warm up on up to `warmup` training steps of the stream (one per call) and on the other batch
    `shapes`, then time `repeats` runs of `steps` batches each.

    Without `steps`, `seconds` bounds the warm-up steps and the repeats, all but the first step:
    that one compiles (seconds for JAX, tinygrad or torch.compile, which would otherwise leave a
    short budget no steady step to estimate from and almost nothing to time), so it always runs,
    timed apart. Warm-up stops early once the later warm-up steps have used half of the budget,
    and the repeats share what is left, at least one step each, rounded down to a multiple of the
    trainer's `timed_steps_multiple` where one fits, so that no timed step takes a slower
    single-step path; fewer than MIN_TIMED_STEPS per repeat is reported. An explicit `steps` is
    timed as given. The other shapes' compilation (torch_xla: ~24 s on 2 cores) is timed apart and
    not taken from the budget.
    `cpu_probe` returns (CPU seconds the whole machine has used, CPU seconds this process has
    used), to tell how busy others kept the machine during the timed repeats."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (the first step carries compilation), got {warmup}")
    start = clock()
    warm_times = []
    # The trainer's own minimum (the step that compiles; more before a CUDA-graph capture or
    # TinyJit's recording call) is never cut short.
    min_steps = trainer.min_warmup_steps()
    for i in range(max(warmup, min_steps)):
        if (i >= min_steps and steps is None
                and trainer.agree_max(clock() - start - warm_times[0]) > seconds / 2):
            break  # every rank sees the same agreed time, so all stop at the same step
        t0 = clock()
        trainer.run([next(stream)])
        trainer.sync()
        warm_times.append(clock() - t0)
    warm_elapsed = clock() - start
    shape_times = []  # reported apart; their compilation does not shorten the timed repeats
    for rows in shapes:
        t0 = clock()
        trainer.gradients(rows)
        trainer.sync()
        shape_times.append(clock() - t0)
    budgeted = steps is None
    if budgeted:
        # Ranks of a multi-process run must agree; the compiling step is no estimate of a step.
        est_step = trainer.agree_max(min(warm_times[1:] or warm_times))
        remaining = max(seconds - trainer.agree_max(warm_elapsed - warm_times[0]), 0.0)
        fit = max(1, math.floor(remaining / repeats / max(est_step, 1e-9)))
        per_call = trainer.timed_steps_multiple()
        steps = fit // per_call * per_call or fit

    rates, step_ms, samples = [], [], []
    cpu_before = cpu_probe() if cpu_probe else None
    timed_start = clock()
    for r in range(repeats):
        batches = [next(stream) for _ in range(steps)]
        n_samples = sum(trainer.samples_per_step(b) for b in batches)
        if progress:
            progress(f"repeat {r + 1}/{repeats}, {steps} steps")
        t0 = clock()
        trainer.run(batches)
        trainer.sync()
        elapsed = clock() - t0
        rates.append(n_samples / elapsed)
        step_ms.append(1000 * elapsed / steps)
        samples.append(n_samples)
    others = None
    if cpu_before is not None:
        machine, own = (after - before for after, before in zip(cpu_probe(), cpu_before))
        others = max(machine - own, 0.0) / max(clock() - timed_start, 1e-9)  # in cores
    spread = max(rates) / min(rates)
    return {
        "samples_per_sec": statistics.median(rates),
        "samples_per_sec_all": rates,
        "samples_per_sec_min_max": [min(rates), max(rates)],
        "step_time_ms": statistics.median(step_ms),
        "samples_per_repeat": samples,
        "steps_per_repeat": steps,
        "too_few_steps": budgeted and steps < MIN_TIMED_STEPS,
        "repeats": repeats,
        "repeat_spread": spread,
        "unsteady": spread > SPREAD_LIMIT,
        "other_processes_cores": others,
        "contended": others is not None and others > CONTENDED_CORES,
        "warmup_steps": len(warm_times),
        "compile_time_s": warm_times[0],
        "warmup_step_times_s": warm_times,
        "warmup_other_shapes": [len(rows) for rows in shapes],
        "warmup_other_shapes_s": shape_times,
    }


def timing_warnings(name: str, timing: dict, seconds: float) -> list[str]:
    """One line for each reason to distrust a measurement."""
    out = []
    if timing["unsteady"]:
        out.append(f"{name}: repeats spread {timing['repeat_spread']:.2f}x (> {SPREAD_LIMIT}x): the "
                   "machine was not steady; compare with care")
    if timing["contended"]:
        out.append(f"{name}: other processes kept {timing['other_processes_cores']:.2f} cores busy while "
                   "timing: the machine was contended")
    if timing["other_bench_runs"]:
        runs = ", ".join(timing["other_bench_runs"])
        out.append(f"{name}: other bench runs were timing at the same time ({runs}): each slowed the other")
    if timing["too_few_steps"]:
        out.append(f"{name}: --seconds {seconds:g} allowed {timing['steps_per_repeat']} timed step(s) per "
                   f"repeat (fewer than {MIN_TIMED_STEPS}): raise --seconds or set --steps")
    return out


def time_training(backend_name: str, device: str, dtype: str, dataset: data_mod.Dataset,
                  cfg: TromptConfig, batch_size: int = spec.BATCH_SIZE, warmup: int = 3,
                  repeats: int = 3, steps: int | None = None, seconds: float = 20.0, seed: int = 0,
                  options: dict | None = None, progress: bool = True,
                  backend: backends.Backend | None = None) -> dict:
    """Returns the result record (see README: Reading results). `backend`, when given, is timed
    instead of `backends.load(backend_name, ...)`: a peer (backends/peers) offers the parts used
    here (parse_options, inexact_options, trainer, device_name, versions)."""
    load_before = os.getloadavg()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    backend = backends.load(backend_name, device=device, dtype=dtype) if backend is None else backend
    options = backend.parse_options(options)
    params = spec.init_params(cfg, seed, dtype)

    t0 = time.perf_counter()
    trainer = backend.trainer(params, cfg, dataset.x_train, dataset.y_train, **options)
    setup_s = time.perf_counter() - t0
    n_train = len(dataset.x_train)
    stream = batch_stream(n_train, batch_size, seed)

    def say(text: str) -> None:
        print(f"  {backend_name}: {text}", file=sys.stderr, flush=True)

    if progress:
        say(f"warm-up: {warmup} step(s), the first compiles (if this backend compiles)")
    with sysinfo.timing_lock() as other_runs:
        timing = measure(trainer, stream, warmup, repeats, steps, seconds, other_shapes(n_train, batch_size),
                         progress=say if progress else None, cpu_probe=sysinfo.cpu_seconds)
    timing["other_bench_runs"] = other_runs
    for warning in timing_warnings(backend_name, timing, seconds):
        print(f"warning: {warning}", file=sys.stderr)
    losses = trainer.losses()
    if not np.all(np.isfinite(losses)):
        raise RuntimeError(f"{backend_name}: non-finite training loss during the benchmark")
    device_mem = trainer.peak_memory_mb()
    return {
        "backend": backend_name,
        "device": device,
        "device_name": backend.device_name(),
        "dtype": dtype,
        "batch_size": batch_size,
        "options": options,
        "inexact_options": backend.inexact_options(options),
        "config": cfg.to_dict(),
        "data": dataset.source,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **backend.versions()},
        "environment": {k: os.environ[k] for k in ENVIRONMENT_KEYS if k in os.environ},
        "git_commit": sysinfo.git_commit(),
        # On how many of the machine's cores it ran (`--cores` narrows it; the single-core rows).
        "cores": sysinfo.cores_in_use(),
        "cores_machine": os.cpu_count(),
        **timing,
        "setup_time_s": setup_s,
        "peak_memory_mb": device_mem if device_mem is not None else sysinfo.peak_rss_mb(),
        "peak_memory_kind": "device" if device_mem is not None else "host RSS (whole process)",
        "final_loss": float(losses[-1]),
        "trainer_notes": trainer.run_notes(),
        "equivalence": None,
        # A shared machine's load explains outliers; the run id ties the files of one `bench all`.
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "run_id": os.environ.get("TROMPT_RUN_ID"),
        "started_at": started_at,
    }
