"""The torch speed-up ladder: reference -> each rewrite -> device trainer -> fused AdamW -> AMP ->
compile -> CUDA graphs -> multi-device, timed in ONE process at batch 8.

    python -m bench ladder --backend torch --device cpu [--seconds 20] [--profile] [--out results]

Writes `ladder_torch_<device>.json`, `.md` (the table) and `.png` (log-scale bar chart) into --out.
Every row reports samples/s (median of repeats), × the reference and × the step it builds on,
compile time (first step), peak memory during the row, and an equivalence label with the measured
deviation from the float64 reference on a fixed batch (the first training batch at the initial
parameters): the row's first training loss, and its predictions for that batch.

Rows that need hardware this machine lacks are kept in the table as "skipped: ...". Timings on a
shared machine are noisy: compare rows of one run, never across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backends import data as data_mod
from backends import spec
from bench import sysinfo

# glibc keeps per-step buffers instead of returning and re-mapping them each step (spec §14).
# Same values as the Makefile's BENCH_ENV. They only act if set before the process starts.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
              "MALLOC_TOP_PAD_": "268435456"}
REEXEC_FLAG = "TROMPT_LADDER_REEXEC"
SMOKE_CONFIG = spec.TromptConfig(n_columns=48, n_prompts=8, d_model=16, n_cycles=3)

# (key, what changed, builds on, backend, trainer options, needs, equivalence class)
# needs: None, "cuda" or "multi" (>= 2 GPUs, or --cpu-ranks on a CPU).
# Options not given take the values of BASE_OPTS.
BASE_OPTS = {"variant": "r5", "optimizer": "default", "host_loop": True}
STEPS = [
    ("reference", "the original model and loop (torch.optim.AdamW default)", None, "reference", {}, None,
     "exact"),
    ("r2", "mask once per batch; (B,P,C,D) expansion collapsed into M·E", "reference", "torch",
     {"variant": "r2"}, None, "reassociated"),
    ("r3", "the 6 cells stacked, batched ops (bmm over cells)", "r2", "torch", {"variant": "r3"}, None,
     "reassociated"),
    ("r4", "downstream head reassociated: no (B,N,P,D) tensor", "r3", "torch", {"variant": "r4"}, None,
     "reassociated"),
    ("r5", "embedding LayerNorm affine folded: E never built", "r4", "torch", {}, None, "reassociated"),
    ("resident", "trainer on device: data resident, losses read lazily", "r5", "torch",
     {"host_loop": False}, None, "reassociated"),
    ("fused", "fused AdamW (one kernel over all parameters)", "resident", "torch",
     {"host_loop": False, "optimizer": "fused"}, None, "reassociated"),
    ("amp", "autocast to bf16 (fp16 + GradScaler on pre-Ampere GPUs)", "fused", "torch",
     {"host_loop": False, "optimizer": "fused", "amp": "AUTO"}, None, "AMP"),
    ("compile", "torch.compile of forward + backward (exact path, no AMP)", "fused", "torch",
     {"host_loop": False, "optimizer": "fused", "compile": True}, None, "reassociated"),
    ("cuda_graphs", "whole step (fwd, bwd, fused AdamW) captured in one CUDA graph", "compile", "torch",
     {"host_loop": False, "optimizer": "fused", "compile": True, "cuda_graphs": True}, "cuda",
     "reassociated"),
    ("cells", "cell parallel over G devices (torchrun; 134 KB all-reduced per step)", "cuda_graphs",
     "torch", {"host_loop": False, "optimizer": "fused", "compile": True, "parallel": "cells"}, "multi",
     "reassociated"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="torch", choices=["torch"], help="only torch has a ladder")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--data", default="synthetic:small")
    p.add_argument("--seconds", type=float, default=20.0, help="timed budget per row (3 repeats)")
    p.add_argument("--reference-steps", type=int, default=1, help="timed reference steps (~17 s each on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--only", default=None, help="comma-separated row keys (the reference always runs)")
    p.add_argument("--profile", action="store_true", help="torch.profiler top ops for a few rows")
    p.add_argument("--no-malloc-env", action="store_true", help="do not re-exec with the glibc MALLOC_* env")
    p.add_argument("--cpu-ranks", type=int, default=0,
                   help="on cpu, run the cells row as this many gloo processes (threads split between them)")
    p.add_argument("--smoke", action="store_true", help="a tiny model and data set: checks the plumbing only")
    p.add_argument("--out", default="results")


def run(args: argparse.Namespace) -> int:
    missing_env = not all(k in os.environ for k in MALLOC_ENV)
    if missing_env and not args.no_malloc_env and REEXEC_FLAG not in os.environ:
        env = {**os.environ, **MALLOC_ENV, REEXEC_FLAG: "1"}
        os.execve(sys.executable, [sys.executable, "-m", "bench", *sys.argv[1:]], env)

    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    cfg = SMOKE_CONFIG if args.smoke else spec.TromptConfig()
    dataset = data_mod.load_dataset(args.data, n_columns=cfg.n_columns)
    fixed = data_mod.epoch_batches(len(dataset.x_train), spec.BATCH_SIZE, 0, spec.SEED)[0]
    oracle = reference_oracle(cfg, dataset, fixed)
    peaks = machine_peaks(args.device)
    wanted = set(args.only.split(",")) | {"reference"} if args.only else None

    rows: dict[str, dict] = {}
    profiles: dict[str, list] = {}
    for key, what, base, backend, opts, needs, label in STEPS:
        if wanted is not None and key not in wanted:
            continue
        options = resolve_options(backend, opts, args.device, threads)
        row = {"key": key, "what": what, "base": base, "backend": backend, "options": options}
        reason = missing_hardware(needs, args.device, args.cpu_ranks)
        if reason:
            rows[key] = {**row, "skipped": reason}
            print(f"{key:12s} skipped: {reason}", file=sys.stderr, flush=True)
            continue
        print(f"{key:12s} {what} ...", file=sys.stderr, flush=True)
        if key == "cells":
            fastest = max((r.get("samples_per_sec") or 0 for r in rows.values()), default=0)
            rows[key] = {**row, **time_multi_process(args, options, threads, fastest)}
            continue
        reset_peak_rss()
        profile = args.profile and key in ("reference", "r3", "r5", "fused", "compile", "cuda_graphs")
        result = time_row(backend, args, cfg, dataset, options, reference=(key == "reference"),
                          profile=profile)
        if "profile" in result:
            profiles[key] = result.pop("profile")
        result["deviation"] = deviation(backend, args.device, cfg, dataset, options, fixed, oracle,
                                        result["first_loss"])
        result["equivalence"] = label_for(label, options)
        result["floors"] = floors(backend, args.device, cfg, dataset, options, peaks)
        rows[key] = {**row, **result}
        print(f"{key:12s} {result['samples_per_sec']:.2f} samples/s", file=sys.stderr, flush=True)

    add_ratios(rows)
    record = {
        "ladder": "torch", "device": args.device, "device_name": device_name(args.device),
        "threads": threads, "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV},
        "data": dataset.source, "smoke": args.smoke, "batch_size": spec.BATCH_SIZE, "config": cfg.to_dict(),
        "torch": torch.__version__, "git_commit": sysinfo.git_commit(),
        "machine_peaks": peaks, "load_average_end": os.getloadavg(), "rows": list(rows.values()),
        "profiles": profiles,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"ladder_torch_{args.device}"
    from bench.results import write_json_atomic

    write_json_atomic(stem.with_suffix(".json"), record)
    table = markdown(record)
    stem.with_suffix(".md").write_text(table)
    bar_chart(record, stem.with_suffix(".png"))
    print(table)
    return 0


# ---------------------------------------------------------------------------------------------
# Rows


def resolve_options(backend: str, opts: dict, device: str, threads: int) -> dict:
    if backend == "reference":
        return {}
    options = {**BASE_OPTS, **opts, "threads": threads}
    if options.get("amp") == "AUTO":
        options["amp"] = amp_dtype(device)
    return options


def amp_dtype(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"  # T4-class cards: fp16 tensor cores with a GradScaler
    return "bf16"


def missing_hardware(needs: str | None, device: str, cpu_ranks: int) -> str | None:
    import torch

    if needs == "cuda" and device != "cuda":
        return "needs CUDA"
    if needs == "multi" and device == "cpu" and cpu_ranks < 2:
        return "needs >= 2 CUDA GPUs (or --cpu-ranks 2 for gloo processes on this CPU)"
    if needs == "multi" and device == "cuda" and torch.cuda.device_count() < 2:
        return "needs >= 2 CUDA GPUs (torchrun --nproc_per_node=G -m bench --parallel cells)"
    return None


def label_for(label: str, options: dict) -> str:
    if label == "AMP":
        return f"AMP {options.get('amp')}"
    if label == "reassociated":
        return "reassociated fp32 (exact in real arithmetic)"
    return "exact (the original)"


def time_row(backend_name: str, args: argparse.Namespace, cfg: spec.TromptConfig,
             dataset: data_mod.Dataset, options: dict, reference: bool, profile: bool) -> dict:
    """bench's timing protocol (warm-up apart, clock stopped after sync, median of repeats), kept
    here so that the row's trainer is at hand for its first loss and its profile."""
    import backends
    from bench.timing import batch_stream

    backend = backends.load(backend_name, device=args.device, dtype="float32")
    trainer = backend.trainer(spec.init_params(cfg, spec.SEED, "float32"), cfg, dataset.x_train,
                              dataset.y_train, **options)
    stream = batch_stream(len(dataset.x_train), spec.BATCH_SIZE, spec.SEED)
    warm = []
    for _ in range(1 if reference else 3):
        t0 = time.perf_counter()
        trainer.run([next(stream)])
        trainer.sync()
        warm.append(time.perf_counter() - t0)
    repeats = 1 if reference else 3
    steps = args.reference_steps if reference else max(1, int(args.seconds / repeats / min(warm)))
    rates = []
    for _ in range(repeats):
        batches = [next(stream) for _ in range(steps)]
        t0 = time.perf_counter()
        trainer.run(batches)
        trainer.sync()
        rates.append(sum(map(len, batches)) / (time.perf_counter() - t0))
    losses = trainer.losses()
    if not np.all(np.isfinite(losses)):
        raise RuntimeError(f"{backend_name} {options}: non-finite training loss")
    result = {"samples_per_sec": float(np.median(rates)), "samples_per_sec_all": rates,
              "step_time_ms": 1000 * spec.BATCH_SIZE / float(np.median(rates)), "steps_per_repeat": steps,
              "repeats": repeats, "compile_time_s": warm[0], "warmup_step_times_s": warm,
              "first_loss": losses[0], "versions": backend.versions()}
    device_peak = trainer.peak_memory_mb()
    result["peak_memory_mb"] = device_peak if device_peak is not None else peak_rss_since_reset_mb()
    result["peak_memory_kind"] = "device" if device_peak is not None else "host RSS peak during the row"
    if profile:
        result["profile"] = top_ops(trainer, stream, args.device, n_steps=1 if reference else 5)
    return result


def time_multi_process(args: argparse.Namespace, options: dict, threads: int, fastest_sps: float) -> dict:
    """torchrun over every GPU (or --cpu-ranks gloo processes), timed by bench's own `time`
    command; its JSON is read back. On a CPU the ranks split this run's threads between them.
    The step count is fixed here (from the fastest single-process row): every rank must run the
    same number of steps, and ranks that derive it from their own warm-up times disagree."""
    import torch

    ranks = torch.cuda.device_count() if args.device == "cuda" else args.cpu_ranks
    per_rank = {"threads": max(1, threads // ranks)} if args.device == "cpu" else {}
    steps = max(5, int(args.seconds / 3 * max(fastest_sps, 1.0) / spec.BATCH_SIZE))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cells.json"
        opts = [f"--opt={k}={v}" for k, v in {**options, **per_rank}.items()
                if k != "parallel" and (k != "threads" or per_rank)]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "bench", "time", "--backend", "torch", "--device", args.device, "--parallel", "cells",
               "--data", args.data, "--steps", str(steps), "--quiet", "--json", str(path), *opts]
        env = {**os.environ, "OMP_NUM_THREADS": str(per_rank.get("threads", 1))}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        if done.returncode != 0 or not path.exists():
            return {"skipped": f"torchrun failed: {' '.join(done.stderr.strip().splitlines()[-1:])}"}
        result = json.loads(path.read_text())
    keep = ("samples_per_sec", "samples_per_sec_all", "step_time_ms", "compile_time_s", "peak_memory_mb",
            "peak_memory_kind")
    return {k: result.get(k) for k in keep} | {
        "equivalence": "reassociated fp32 (exact in real arithmetic)", "ranks": ranks,
        "options": {**options, **per_rank}}


# ---------------------------------------------------------------------------------------------
# Equivalence: deviation from the float64 reference on a fixed batch


def reference_oracle(cfg: spec.TromptConfig, dataset: data_mod.Dataset, rows: np.ndarray) -> dict:
    """Float64 reference predictions and loss for `rows` at the initial parameters (~3 GB peak)."""
    import backends

    reference = backends.load("reference", dtype="float64")
    params = spec.init_params(cfg, spec.SEED, "float64")
    x, y = dataset.x_train[rows].astype(np.float64), dataset.y_train[rows].astype(np.float64)
    pred = reference.forward(params, x, cfg)
    return {"pred": pred, "loss": float(np.mean((pred - y[:, None]) ** 2))}


def deviation(backend: str, device: str, cfg: spec.TromptConfig, dataset: data_mod.Dataset, options: dict,
              rows: np.ndarray, oracle: dict, first_loss: float | None) -> dict:
    """Relative deviation (to the oracle's max abs) of this row's predictions on the fixed batch,
    computed by its trainer at the initial parameters, and of its first training loss (the timed
    run's first step is that very batch at those parameters, through the row's own step code)."""
    import backends

    out: dict = {}
    if first_loss is not None:
        out["loss_rel"] = abs(first_loss - oracle["loss"]) / abs(oracle["loss"])
    if backend == "reference":
        pred = backends.load("reference", device=device).forward(
            spec.init_params(cfg, spec.SEED, "float32"), dataset.x_train[rows], cfg)
    else:
        predict_opts = {k: v for k, v in options.items() if k in ("variant", "amp", "threads")}
        trainer = backends.load(backend, device=device).trainer(
            spec.init_params(cfg, spec.SEED, "float32"), cfg, dataset.x_train[rows], dataset.y_train[rows],
            **predict_opts)
        pred = trainer.predict(dataset.x_train[rows])
    out["pred_rel"] = float(np.abs(pred - oracle["pred"]).max() / np.abs(oracle["pred"]).max())
    out["max_rel"] = max(out.values())
    return out


# ---------------------------------------------------------------------------------------------
# Floors: what the machine could do at best for this algorithm, measured in the same run


def machine_peaks(device: str) -> dict:
    """Best-of-5 float32 GEMM rate (2048², and the model's own 128×984×128 shape) and copy
    bandwidth (read + write) with this process's threads."""
    import torch

    dev = torch.device(device)

    def best_seconds(fn: object, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    big = torch.randn(2048, 2048, device=dev)
    mask, emb = torch.randn(48, 128, 984, device=dev), torch.randn(48, 984, 128, device=dev)
    src = torch.randn(16 * 2**20, device=dev)  # 64 MB, far beyond the caches
    dst = torch.empty_like(src)
    return {
        "gemm_gflops_2048": 2 * 2048**3 / best_seconds(lambda: big @ big) / 1e9,
        "gemm_gflops_model": 2 * 48 * 128 * 984 * 128 / best_seconds(lambda: torch.bmm(mask, emb)) / 1e9,
        "copy_gb_per_s": 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src)) / 1e9,
    }


def gemm_flops_per_sample(backend: str, device: str, cfg: spec.TromptConfig, dataset: data_mod.Dataset,
                          options: dict) -> float:
    """Matmul-class FLOPs of one training step (forward + backward) per sample, counted by torch's
    FlopCounterMode (element-wise work is not counted). The reference is counted at batch 1: it
    repeats everything per sample anyway."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = spec.init_params(cfg, spec.SEED, "float32")
    rows = np.arange(1 if backend == "reference" else spec.BATCH_SIZE)
    x = torch.as_tensor(dataset.x_train[rows], device=device)
    y = torch.as_tensor(dataset.y_train[rows], device=device)
    counter = FlopCounterMode(display=False)
    if backend == "reference":
        from reference.backend import build_model
        from reference.model import mse_over_cycles

        net = build_model(params, cfg, "float32", device)
        with counter:
            mse_over_cycles(net(x), y).backward()
    else:
        from backends.torch import model

        p = {k: v.requires_grad_(True) for k, v in model.stack_params(params, cfg, device=device).items()}
        with counter:
            pred = model.VARIANTS[options["variant"]](p, x)
            (model.sum_squared_error(pred, y) / pred.numel()).backward()
    return counter.get_total_flops() / len(rows)


_FLOPS_CACHE: dict[str, float] = {}


def floors(backend: str, device: str, cfg: spec.TromptConfig, dataset: data_mod.Dataset, options: dict,
           peaks: dict) -> dict:
    """Upper bounds on samples/s: GEMM FLOPs at the measured GEMM rate (element-wise work ignored,
    so the true bound is lower), and AdamW's unavoidable traffic (read + write params, m, v:
    24 bytes per parameter per step, trompt_spec.md §9) at the measured copy bandwidth."""
    key = backend if backend == "reference" else options["variant"]
    if key not in _FLOPS_CACHE:
        _FLOPS_CACHE[key] = gemm_flops_per_sample(backend, device, cfg, dataset, options)
    flops = _FLOPS_CACHE[key]
    bytes_per_sample = 24 * spec.n_params(cfg) / spec.BATCH_SIZE
    rate = max(peaks["gemm_gflops_2048"], peaks["gemm_gflops_model"]) * 1e9
    return {"gemm_flops_per_sample": flops, "compute_floor_sps": rate / flops,
            "optimizer_bytes_per_sample": bytes_per_sample,
            "memory_floor_sps": peaks["copy_gb_per_s"] * 1e9 / bytes_per_sample}


# ---------------------------------------------------------------------------------------------
# Memory, profiles, ratios, output


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets this process's peak RSS (VmHWM), so each row's peak
    is its own and not the reference's 4.6 GB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_since_reset_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def top_ops(trainer: object, stream: object, device: str, n_steps: int, n_ops: int = 8) -> list[dict]:
    """The most expensive ops (self time) of `n_steps` warm steps, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    batches = [next(stream) for _ in range(n_steps)]
    with profile(activities=activities) as prof:
        trainer.run(batches)
        trainer.sync()
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    total = sum(getattr(e, attr) for e in events) or 1
    return [{"op": e.key, "ms_per_step": getattr(e, attr) / 1000 / n_steps,
             "share": getattr(e, attr) / total, "calls_per_step": e.count / n_steps}
            for e in events[:n_ops]]


def add_ratios(rows: dict[str, dict]) -> None:
    ref = rows.get("reference", {}).get("samples_per_sec")
    for row in rows.values():
        sps = row.get("samples_per_sec")
        if not sps:
            continue
        row["x_reference"] = sps / ref if ref else None
        base_of = {step[0]: step[2] for step in STEPS}
        base = base_of[row["key"]]
        while base and not rows.get(base, {}).get("samples_per_sec"):  # nearest row that ran
            base = base_of[base]
        row["x_previous"] = sps / rows[base]["samples_per_sec"] if base else None


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return sysinfo.cpu_name()


def markdown(record: dict) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    lines = [
        f"Torch ladder on **{record['device_name']}** ({record['device']}, {record['threads']} threads, "
        f"torch {record['torch']}, commit {record['git_commit']}), batch {record['batch_size']}, "
        f"data {record['data']}, float32. Samples/s are medians of 3 repeats in ONE run; load average "
        f"at the end {', '.join(f'{x:.1f}' for x in record['load_average_end'])}.",
        "",
        "Measured in the same run: GEMM {:.0f} GFLOP/s (2048²) / {:.0f} GFLOP/s (the model's 128×984×128), "
        "copy {:.1f} GB/s. Compute floor = GEMM FLOPs at the better GEMM rate (element-wise work "
        "ignored); the optimizer-traffic floor is {:.0f} samples/s (24 B per parameter per step)."
        .format(record["machine_peaks"]["gemm_gflops_2048"], record["machine_peaks"]["gemm_gflops_model"],
                record["machine_peaks"]["copy_gb_per_s"], memory_floor(record)),
        "",
        "| step | what changed | samples/s | × reference | × previous | compile s | peak MB "
        "| equivalence | max rel dev vs fp64 ref | GEMM GFLOP/sample | % of compute floor |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in record["rows"]:
        if r.get("skipped"):
            lines.append(f"| {r['key']} | {r['what']} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        dev = r.get("deviation", {}).get("max_rel")
        floor = r.get("floors") or {}
        gflop = floor["gemm_flops_per_sample"] / 1e9 if floor else None
        share = 100 * r["samples_per_sec"] / floor["compute_floor_sps"] if floor else None
        lines.append(
            f"| {r['key']} | {r['what']} | {num(r['samples_per_sec'], '.2f')} | "
            f"{num(r.get('x_reference'), '.1f')} | {num(r.get('x_previous'), '.2f')} | "
            f"{num(r.get('compile_time_s'), '.1f')} | {num(r.get('peak_memory_mb'), '.0f')} | "
            f"{r.get('equivalence', '')} | {num(dev, '.1e')} | {num(gflop, '.3f')} | {num(share, '.1f')} |")
    for key, ops in record.get("profiles", {}).items():
        lines += ["", f"Top ops, `{key}` (self time per step):", "",
                  "| op | ms/step | share | calls/step |", "|---|---:|---:|---:|"]
        lines += [f"| {o['op']} | {o['ms_per_step']:.2f} | {100 * o['share']:.0f}% "
                  f"| {o['calls_per_step']:.0f} |" for o in ops]
    return "\n".join(lines) + "\n"


def memory_floor(record: dict) -> float:
    for r in record["rows"]:
        if r.get("floors"):
            return r["floors"]["memory_floor_sps"]
    return float("nan")


def bar_chart(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in record["rows"] if r.get("samples_per_sec")]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(done) + 1.5))
    names = [r["key"] for r in done][::-1]
    values = [r["samples_per_sec"] for r in done][::-1]
    colors = ["tab:orange" if str(r.get("equivalence", "")).startswith("AMP") else "tab:blue"
              for r in done][::-1]
    ax.barh(names, values, color=colors)
    ax.set_xscale("log")
    for i, r in enumerate(done[::-1]):
        label = f"  {values[i]:.1f}  ({r.get('x_reference') or 1:.0f}×)"
        ax.text(values[i], i, label, va="center", fontsize=8)
    ax.set_xlabel("training samples/s at batch 8 (log scale; orange = AMP, not exact)")
    ax.set_title(f"torch ladder, {record['device_name']}", fontsize=9)
    ax.set_xlim(right=max(values) * 20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover - normally reached through `python -m bench ladder`
    start = time.time()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
