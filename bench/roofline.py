"""Accelerators on paper: a roofline ESTIMATE of every torch ladder rung on GPUs and a TPU, made
from what one training step of the rung does, counted on this CPU. Estimates, not measurements:
`make device-check` on the real hardware replaces them.

    python -m bench roofline [--out results] [--only fused,compile] [--n-prompts 8 --d-model 8]

Counting and fusion: `bench/kernel_count.py` runs one step of the rung's eager trainer (batch 8,
float32) under a TorchDispatchMode and records every kernel's class, FLOPs and bytes; compiled
rungs, and every rung on the TPU (torch_xla compiles each step), get its ideal fusion, a best case.
`bench/published_peaks.py` holds each device's peaks with their sources and the assumptions.

Estimate (`estimate`). A step takes, over its kernels, the sum of max(FLOPs / peak rate of the
kernel's class, bytes / memory bandwidth), plus kernels x a launch overhead, plus the all-reduce
of a two-device run; samples/s = 8 / that. The bound named is the largest of the three parts.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from backends import data as data_mod
from backends import spec
from bench import cli, ladder, output, sysinfo
from bench.published_peaks import DEVICES, GRAPH_SOURCE, GRAPH_US, LAUNCH_SOURCE, Device

if TYPE_CHECKING:
    from bench.kernel_count import Op

KIND = "roofline estimate"


# ---------------------------------------------------------------------------------------------
# Estimates


def estimate(ops: list[Op], device: Device, precision: str, launch_us: float, batch: int = spec.BATCH_SIZE,
             transfer_bytes: int = 0) -> dict:
    """Step time of `ops` on `device` (precision "exact" or "tensor"), plus an all-reduce of
    `transfer_bytes` over its link (two devices: each sends and receives that many bytes once)."""
    compute = memory = 0.0
    for op in ops:
        rate = device.matmul_rate(op.half, precision) if op.kind == "matmul" else (
            1e12 * device.vector_tflops if device.vector_tflops else math.inf)
        compute_s, memory_s = op.flops / rate, op.bytes / (device.gb_per_s * 1e9)
        if compute_s > memory_s:
            compute += compute_s
        else:
            memory += memory_s
    parts = {"launches": len(ops) * launch_us * 1e-6, "memory": memory, "compute": compute}
    if transfer_bytes:
        parts["all-reduce"] = transfer_bytes / (device.link_gb_per_s * 1e9) + launch_us * 1e-6
    total = sum(parts.values())
    return {"step_ms": 1e3 * total, "samples_per_sec": batch / total, "bound": max(parts, key=parts.get),
            **{f"{k.replace('-', '_')}_ms": 1e3 * v for k, v in parts.items()}}


def plan(rung: ladder.Rung, device: Device) -> tuple[str, dict] | str:
    """How a rung is estimated on a device (eager, fused, graphs, ddp, ddp_fused or cells) and
    the options of the eager trainer counted for it; or why it has no estimate there."""
    opts = rung.options
    if opts.get("variant") == "r5-fused":
        return "CPU-only C++ kernels (invisible to the dispatcher; no GPU or TPU version)"
    eager = {k: v for k, v in opts.items() if k in ("variant", "optimizer", "host_loop", "amp")}
    compiled = bool(opts.get("compile"))
    if device.key.startswith("tpu"):
        if rung.backend == "reference" or opts.get("cuda_graphs") or opts.get("parallel"):
            return "runs on cpu/cuda only"
        return "fused", eager
    if device.count > 1:
        if opts.get("parallel") == "cells":
            return "cells", eager
        if rung.backend == "reference" or opts.get("cuda_graphs"):
            return "single device only (cannot be combined with parallel)"
        return ("ddp_fused" if compiled else "ddp"), eager
    if opts.get("parallel"):
        return "needs 2 devices (see the 2 x T4 column)"
    return ("graphs" if opts.get("cuda_graphs") else "fused" if compiled else "eager"), eager


def rung_record(rung: ladder.Rung, counted: Callable[..., list[Op]], cfg: spec.TromptConfig) -> dict:
    """Counts (eager, and what ideal fusion leaves of them) and estimates on every device.
    `counted(backend, options, batch, n_cycles)` returns the kernels of one step."""
    from bench.kernel_count import fuse_chains, summary  # imports torch

    shapes = spec.param_shapes(cfg)
    shared = sum(math.prod(s) for k, s in shapes.items() if k.startswith(("prompt", "tdown.")))
    rank_cells = -(-cfg.n_cycles // 2)  # rank 0's share of the cells, of two ranks
    record: dict = {"key": rung.key, "what": rung.what, "estimates": {}}
    for device in DEVICES:
        how = plan(rung, device)
        if isinstance(how, str):
            record["estimates"][device.key] = {"skipped": how}
            continue
        how, opts = how
        batch = spec.BATCH_SIZE // 2 if how.startswith("ddp") else spec.BATCH_SIZE
        n_cycles = rank_cells if how == "cells" else cfg.n_cycles
        ops = counted(rung.backend, opts, batch, n_cycles)
        if "counted" not in record and batch == spec.BATCH_SIZE:
            record["counted"] = {"n_cycles": n_cycles, "eager": summary(ops),
                                 "ideal_fusion": summary(fuse_chains(ops))}
        if how not in ("eager", "ddp"):
            ops = fuse_chains(ops)
        # float32 gradients: every one under ddp, the replicated ones under cells (F8)
        every = spec.n_params(cfg)
        transfer = 4 * {"ddp": every, "ddp_fused": every, "cells": shared}.get(how, 0)
        launch_us = GRAPH_US if how == "graphs" else device.launch_us
        record["estimates"][device.key] = {
            "how": how, "kernels": len(ops), "bytes": sum(op.bytes for op in ops),
            "all_reduce_bytes": transfer,
            **{p: estimate(ops, device, p, launch_us, transfer_bytes=transfer) for p in ("exact", "tensor")}}
    if "counted" not in record:
        record["skipped"] = next(iter(record["estimates"].values()))["skipped"]
    return record


# ---------------------------------------------------------------------------------------------
# Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    cli.add_model_args(p)
    p.add_argument("--only", type=ladder.rung_keys, default=None,
                   help=f"comma-separated rung keys ({', '.join(ladder.KEYS)}); default: all")
    p.add_argument("--out", default=None,
                   help="directory for roofline_estimates.{json,md} (default: runs/<run id>/; "
                        "`results` publishes)")


def run(args: argparse.Namespace) -> int:
    import torch

    from bench.kernel_count import count_step

    columns = getattr(args, "n_columns", None) or spec.TromptConfig().n_columns
    dataset = data_mod.load_dataset("synthetic:tiny", seed=spec.SEED, n_columns=columns)
    sizes = {"n_columns": columns, "n_prompts": args.n_prompts, "d_model": args.d_model,
             "n_cycles": args.n_cycles}
    cfg = spec.TromptConfig(**sizes)
    cache: dict[tuple, list[Op]] = {}

    def counted(backend: str, options: dict, batch: int, n_cycles: int) -> list[Op]:
        key = (backend, tuple(sorted(options.items())), batch, n_cycles)
        if key not in cache:
            sized = dataclasses.replace(cfg, n_cycles=n_cycles)
            cache[key] = count_step(backend, options, sized, dataset, batch)
        return cache[key]

    rungs = [r for r in ladder.RUNGS if args.only is None or r.key in args.only]
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in sizes.items()] + ([f"--only {','.join(args.only)}"]
                                                                           if args.only else [])
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "kind": KIND, "note": "estimates from counted work and published peaks, not measurements; "
        "`make device-check` on the hardware replaces them",
        "command": " ".join(["python -m bench roofline", *flags]),
        "counted_on": f"this CPU, torch {torch.__version__} eager, float32",
        "git_commit": sysinfo.git_commit(),
        "run_id": run_id, "batch_size": spec.BATCH_SIZE, "config": cfg.to_dict(),
        "launch_overhead": LAUNCH_SOURCE, "cuda_graph_overhead": GRAPH_SOURCE,
        "devices": [dataclasses.asdict(d) for d in DEVICES],
        "rungs": [rung_record(r, counted, cfg) for r in rungs],
    }
    out = Path(args.out or f"runs/{run_id}")
    table = markdown(record)
    output.write_json(out / "roofline_estimates.json", record)
    output.write_text(out / "roofline_estimates.md", table)
    print(table)
    print(f"wrote {out}/roofline_estimates.{{json,md}}")
    return 0


def speed_cell(estimate: dict, precision: str) -> str:
    if "skipped" in estimate:
        return "—"
    e = estimate[precision]
    return f"{e['samples_per_sec']:,.0f} ({e['bound']})"


def estimate_table(record: dict, precision: str) -> str:
    header = ["rung"] + [d["name"] for d in record["devices"]]
    rows = [[r["key"]] + [speed_cell(r["estimates"][d["key"]], precision) for d in record["devices"]]
            for r in record["rungs"]]
    return output.markdown_table(header, rows, "l" + "r" * len(record["devices"]))


def markdown(record: dict) -> str:
    """The counts and both estimate tables; every figure titled as an estimate."""
    counts = []
    for r in record["rungs"]:
        if "counted" not in r:
            counts.append([r["key"], f"not counted: {r['skipped']}"] + [""] * 6)
            continue
        eager, fused = r["counted"]["eager"], r["counted"]["ideal_fusion"]
        matmul = eager["by_class"]["matmul"]["flops"]
        counts.append([r["key"], " / ".join(str(c["kernels"]) for c in eager["by_class"].values()),
                       f"{matmul / 1e9:.3g}", f"{(eager['flops'] - matmul) / 1e9:.3g}",
                       f"{eager['bytes'] / 1e6:,.1f}", str(fused["kernels"]), f"{fused['bytes'] / 1e6:,.1f}",
                       str(r["counted"]["n_cycles"])])
    header = ["rung", "eager kernels (matmul / reduction / elementwise / optimizer)", "matmul GFLOP",
              "other GFLOP", "MB moved", "kernels, ideal fusion", "MB, ideal fusion", "cells counted"]
    return "\n".join([
        f"# Roofline ESTIMATES for the torch ladder (not measurements), config {record['config']}, "
        f"batch {record['batch_size']}",
        "",
        f"Made by `{record['command']}` (commit {record['git_commit']}): one step of each rung's eager "
        f"trainer counted on {record['counted_on']} (bench/roofline.py says how), then priced with the "
        "published peaks below. Replace with measurements from `make device-check` on the hardware.",
        "",
        "## Counted work per training step (estimate inputs)",
        "",
        output.markdown_table(header, counts, "llrrrrrr"),
        "",
        "## Estimated samples/s, exact float32 (what bounds it)",
        "",
        estimate_table(record, "exact"),
        "",
        "## Estimated samples/s, float32 matmuls on tensor units (TF32; TPU one bf16 pass): NOT exact",
        "",
        estimate_table(record, "tensor"),
        "",
        "The amp rung is not exact in either table (16-bit matmuls at the 16-bit rate). TPU: every rung "
        "estimated fused, launches not modelled. 2 x T4: ddp with 4 rows per card plus one all-reduce of "
        "every gradient; cells: each card runs half the cells, then the shared gradients are all-reduced.",
        "",
        "## Peaks used (published figures, with sources)",
        "",
        output.markdown_table(
            ["device", "fp32 TFLOPS", "tensor TFLOPS", "16-bit TFLOPS", "GB/s", "launch us", "sources"],
            [[d["name"], f"{d['fp32_tflops']:.3g}", f"{d['tensor_tflops']:.4g}", f"{d['half_tflops']:.4g}",
              f"{d['gb_per_s']:,.0f}", f"{d['launch_us']:g}", "; ".join(d["sources"])]
             for d in record["devices"]],
            "lrrrrrl"),
        "",
    ])
