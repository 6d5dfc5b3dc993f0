"""Time training steps of one backend: warm-up (compile) apart, then a median over repeats.

The clock stops only after `trainer.sync()`, so queued device work is counted. The number of
timed steps per repeat comes from a time budget (`seconds`), measured on the warm-up steps,
so a 17 s/step reference and a 3 ms/step compiled backend both finish in about the same time.
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
from collections.abc import Iterator

import numpy as np

import backends
from backends import data as data_mod
from backends import spec
from backends.spec import TromptConfig
from bench import sysinfo


def batch_stream(n_train: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """The training order of the protocol, epoch after epoch, as an endless stream of batches."""
    for epoch in itertools.count():
        yield from data_mod.epoch_batches(n_train, batch_size, epoch, seed)


def time_training(backend_name: str, device: str, dtype: str, dataset: data_mod.Dataset,
                  cfg: TromptConfig, batch_size: int = spec.BATCH_SIZE, warmup: int = 3,
                  repeats: int = 3, steps: int | None = None, seconds: float = 20.0, seed: int = 0,
                  options: dict | None = None, progress: bool = True) -> dict:
    """Returns the result record (see README: Reading results)."""
    options = dict(options or {})
    load_before = os.getloadavg()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    backend = backends.load(backend_name, device=device, dtype=dtype)
    params = spec.init_params(cfg, seed, dtype)

    t0 = time.perf_counter()
    trainer = backend.trainer(params, cfg, dataset.x_train, dataset.y_train, **options)
    setup_s = time.perf_counter() - t0
    stream = batch_stream(len(dataset.x_train), batch_size, seed)

    # Warm-up: the first step carries compilation/tracing; the others settle caches and allocators.
    warm_times = []
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        trainer.run([next(stream)])
        trainer.sync()
        warm_times.append(time.perf_counter() - t0)
    compile_time_s = warm_times[0]
    est_step = trainer.agree_max(min(warm_times))  # ranks of a multi-process run must agree
    if steps is None:
        steps = max(1, math.floor(seconds / max(repeats, 1) / max(est_step, 1e-6)))

    rates, step_ms = [], []
    for r in range(max(1, repeats)):
        batches = [next(stream) for _ in range(steps)]
        n_samples = sum(len(b) for b in batches)
        if progress:
            print(f"  {backend_name}: repeat {r + 1}/{repeats}, {steps} steps", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        trainer.run(batches)
        trainer.sync()
        elapsed = time.perf_counter() - t0
        rates.append(n_samples / elapsed)
        step_ms.append(1000 * elapsed / steps)

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
        "config": cfg.to_dict(),
        "data": dataset.source,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **backend.versions()},
        "git_commit": sysinfo.git_commit(),
        "samples_per_sec": statistics.median(rates),
        "samples_per_sec_all": rates,
        "step_time_ms": statistics.median(step_ms),
        "steps_per_repeat": steps,
        "repeats": repeats,
        "warmup_steps": len(warm_times),
        "compile_time_s": compile_time_s,
        "warmup_step_times_s": warm_times,
        "setup_time_s": setup_s,
        "peak_memory_mb": device_mem if device_mem is not None else sysinfo.peak_rss_mb(),
        "peak_memory_kind": "device" if device_mem is not None else "host RSS (whole process)",
        "final_loss": float(losses[-1]),
        "equivalence": None,
        # A shared machine's load explains outliers; the run id ties the files of one `bench all`.
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "run_id": os.environ.get("TROMPT_RUN_ID"),
        "started_at": started_at,
    }
