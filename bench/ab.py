"""`bench ab`: two or more configurations of one backend timed against each other, interleaved.

On a shared machine the speed drifts by more than most changes are worth, so configurations are
only compared within one run, their samples taken in turn: round 1 times A then B, round 2 B
then A, and so on (the order flips every round, so a steady drift favours neither). Each sample
is one repeat of `--steps` steps (bench/timing.py's `measure`); a configuration's speed is the
median of its samples, and two ratios are printed against the first configuration: the ratio of
the medians and the median of the per-round ratios (the pair of samples taken next to each other).

A configuration is one quoted string of `key=value` words: trainer options (`steps_per_call=1`,
see `bench options`) and environment variables (`env.XLA_FLAGS="--flag --other"`; `env.NAME=`
with nothing after "=" removes NAME). Without environment variables every configuration is
built in this one process. With any, the environment must differ before the framework starts,
so every sample is a fresh `bench time` process (warm-up in it, then one timed repeat), and the
processes alternate in the same flipping order.

    python -m bench ab --backend jax --config "steps_per_call=1" --config "steps_per_call=8"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import backends
from backends import spec
from bench import cli, output, sysinfo, timing

ENV_PREFIX = "env."


@dataclasses.dataclass(frozen=True)
class Config:
    label: str  # the text the user typed
    options: dict[str, str]
    env: dict[str, str | None]  # None: remove the variable


def parse_config(text: str) -> Config:
    """'steps_per_call=1 env.XLA_FLAGS="--a --b"' -> options and environment; one-line errors."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"--config {text!r}: {e}") from None
    options: dict[str, str] = {}
    env: dict[str, str | None] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key or key == ENV_PREFIX:
            raise ValueError(f"--config {text!r}: expected key=value or env.NAME=value words, got {word!r}")
        if key.startswith(ENV_PREFIX):
            env[key[len(ENV_PREFIX):]] = value or None
        else:
            options[key] = value
    return Config(text.strip() or "(defaults)", options, env)


def round_order(n_configs: int, round_index: int) -> list[int]:
    """Configurations in the order round `round_index` times them: forwards, then backwards."""
    order = list(range(n_configs))
    return order if round_index % 2 == 0 else order[::-1]


def summarise(labels: list[str], samples: list[list[float]]) -> list[dict]:
    """Per configuration: median, min, max of its samples (samples/s), the ratio of its median to
    the first configuration's and the median of the per-round ratios (sample r / first's r)."""
    base = samples[0]
    rows = []
    for label, rates in zip(labels, samples, strict=True):
        paired = [rate / first for rate, first in zip(rates, base, strict=True)]
        rows.append({"config": label, "samples_per_sec": statistics.median(rates), "min": min(rates),
                     "max": max(rates), "samples": rates,
                     "ratio": statistics.median(rates) / statistics.median(base),
                     "paired_ratio": statistics.median(paired)})
    return rows


# ---------------------------------------------------------------------------------------------
# The two ways of taking a sample


def in_process_samples(make_trainer: Callable[[dict], backends.Trainer], configs: list[Config],
                       stream_of: Callable[[], Iterator], shapes: list, rounds: int, steps: int,
                       warmup: int, clock: Callable[[], float] = time.perf_counter,
                       cpu_probe: Callable | None = None) -> tuple[list[list[float]], list[float], list]:
    """Every configuration's trainer built here; returns (samples per config, first-step s, cores
    the other processes kept busy during each config's samples: see timing.measure)."""
    trainers = [make_trainer(c.options) for c in configs]
    streams = [stream_of() for _ in configs]  # each trainer sees the protocol's batches
    samples: list[list[float]] = [[] for _ in configs]
    first_step = [0.0] * len(configs)
    others: list[list] = [[] for _ in configs]
    for r in range(rounds):
        for i in round_order(len(configs), r):
            # round 1 warms up (compiles) and runs the short batch's shape; later rounds take one
            # untimed step first, which measure() requires
            out = timing.measure(trainers[i], streams[i], warmup if r == 0 else 1, 1, steps, 0.0,
                                 shapes if r == 0 else [], clock=clock, cpu_probe=cpu_probe)
            samples[i].append(out["samples_per_sec"])
            others[i].append(out["other_processes_cores"])
            if r == 0:
                first_step[i] = out["compile_time_s"]
    return samples, first_step, others


def child_command(args: argparse.Namespace, config: Config, json_path: str) -> list[str]:
    """The `bench time` process that takes one sample of `config`."""
    command = [sys.executable, "-m", "bench", "time", "--backend", args.backend, "--device", args.device,
               "--dtype", args.dtype, "--data", args.data, "--batch-size", str(args.batch_size),
               "--seed", str(args.seed), "--n-prompts", str(args.n_prompts), "--d-model", str(args.d_model),
               "--n-cycles", str(args.n_cycles), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--repeats", "1", "--no-floors", "--quiet", "--json", json_path, "--force"]
    if args.n_columns:
        command += ["--n-columns", str(args.n_columns)]
    for key, value in config.options.items():
        command += ["--opt", f"{key}={value}"]
    return command


def child_environment(base: dict[str, str], config: Config) -> dict[str, str]:
    env = dict(base)
    for key, value in config.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def child_samples(args: argparse.Namespace, configs: list[Config],
                  base_env: dict[str, str]) -> tuple[list[list[float]], list[float], list]:
    """One fresh `bench time` process per sample; first step s is the median over processes."""
    samples: list[list[float]] = [[] for _ in configs]
    first_steps: list[list[float]] = [[] for _ in configs]
    others: list[list] = [[] for _ in configs]
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as folder:
        path = str(Path(folder) / "sample.json")
        for r in range(args.rounds):
            for i in round_order(len(configs), r):
                done = subprocess.run(child_command(args, configs[i], path), capture_output=True, text=True,
                                      env=child_environment(base_env, configs[i]))
                if done.returncode != 0:
                    tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
                    raise RuntimeError(f"config {configs[i].label!r}: bench time failed: {tail}")
                record = json.loads(Path(path).read_text())
                samples[i].append(record["samples_per_sec"])
                first_steps[i].append(record["compile_time_s"])
                others[i].append(record["other_processes_cores"])
    return samples, [statistics.median(times) for times in first_steps], others


def busy_cores(per_sample: list) -> str:
    """Median cores the other processes kept busy while a configuration's samples ran."""
    known = [v for v in per_sample if v is not None]
    return f"{statistics.median(known):.2f}" if known else "-"


# ---------------------------------------------------------------------------------------------
# The command


def add_arguments(p: argparse.ArgumentParser) -> None:
    cli.add_backend_args(p)
    p.add_argument("--config", action="append", default=[], metavar="'KEY=VALUE ...'",
                   help="one configuration (repeat it, at least twice); the first is the baseline; "
                        "'' is the defaults")
    cli.add_data_args(p)
    p.add_argument("--rounds", type=cli.positive_int, default=5, help="samples per configuration")
    p.add_argument("--steps", type=cli.positive_int, default=20, help="timed steps per sample")
    p.add_argument("--warmup", type=cli.positive_int, default=3, help="untimed steps before the first sample")
    cli.add_output_args(p)


def run(args: argparse.Namespace) -> int:
    from bench.commands import load_data, refuse_existing

    base_env = dict(os.environ)  # before a framework is imported (JAX's import edits XLA_FLAGS)
    if len(args.config) < 2:
        raise ValueError("bench ab needs at least two --config (the first is the baseline)")
    configs = [parse_config(text) for text in args.config]
    refuse_existing(args.json, args.force)
    backend = backends.load(args.backend, device=args.device, dtype=args.dtype)
    for config in configs:  # bad options fail before anything is timed
        backend.parse_options(config.options)
    dataset, cfg = load_data(args)
    load_before = os.getloadavg()[0]
    separate = any(c.env for c in configs)
    if separate:
        samples, first_step, others = child_samples(args, configs, base_env)
    else:
        params = spec.init_params(cfg, args.seed, args.dtype)
        n_train = len(dataset.x_train)
        samples, first_step, others = in_process_samples(
            lambda options: backend.trainer(params, cfg, dataset.x_train, dataset.y_train, **options),
            configs, lambda: timing.batch_stream(n_train, args.batch_size, args.seed),
            timing.other_shapes(n_train, args.batch_size), args.rounds, args.steps, args.warmup,
            cpu_probe=sysinfo.cpu_seconds)
    rows = summarise([c.label for c in configs], samples)
    for row, seconds, busy in zip(rows, first_step, others, strict=True):
        row["first_step_s"] = seconds
        row["other_processes_cores"] = busy
    load = {"before": load_before, "after": os.getloadavg()[0]}
    how = "fresh processes, alternating" if separate else "one process, interleaved"
    print(f"{args.backend} {args.device} {args.dtype}, {args.rounds} rounds of {args.steps} steps ({how}), "
          f"1-min load {load['before']:.2f} -> {load['after']:.2f}")
    print(output.markdown_table(
        ["config", "samples/s (median)", "min-max", "× first", "paired × first", "first step s",
         "others' cores"],
        [[r["config"], f"{r['samples_per_sec']:,.1f}", f"{r['min']:,.1f}-{r['max']:,.1f}",
          f"{r['ratio']:.3f}", f"{r['paired_ratio']:.3f}", f"{r['first_step_s']:.2f}",
          busy_cores(r["other_processes_cores"])] for r in rows]))
    if args.json:
        record = {"backend": args.backend, "device": args.device, "dtype": args.dtype, "data": dataset.source,
                  "config": cfg.to_dict(), "batch_size": args.batch_size, "rounds": args.rounds,
                  "steps": args.steps, "separate_processes": separate, "load_average_1min": load,
                  "device_name": backend.device_name(), "versions": backend.versions(), "results": rows}
        output.write_json(args.json, record, replace=args.force)
    return 0
