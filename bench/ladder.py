"""The torch speed-up ladder: reference -> r2 -> r3 -> r4 -> r5 -> resident trainer -> fused AdamW
-> AMP -> compile -> CUDA graphs -> cells over several processes, every rung timed and checked.

    python -m bench ladder --backend torch --device cpu [--seconds 20] [--only r5,compile] [--out results]

Each rung is a `Rung`: a backend and the trainer options set by hand. It is built through
`backends.load` and timed by `bench.timing.time_training`, so its warm-up (the epoch's short last
batch included), step formula, spread flag and sync rule are those of `bench time`. Its
equivalence is `bench check` on that very backend and those options (the reference row: the
reference in float32 against itself in float64). The cells rung runs as `bench time --check`
under torchrun, over every GPU or over --cpu-ranks gloo processes.

Writes `ladder_torch_<device>.{json,md,png}` (`ladder_torch_<device>_smoke.*` with --smoke) into
--out: runs/<run id>/ by default (untracked); `--out results` publishes. Rungs that need hardware
this machine lacks stay in the table as "skipped: ...". Timings on a shared machine are noisy:
compare rows of one run, never across runs. All rungs run in one process, on purpose: their ratios
are then measured under the same conditions. Whether a process can settle in a slower mode for
its whole life (torch.compile's has been seen to) is what `bench all` measures, with every
configuration in several fresh processes and the spread between them in its table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import backends
from backends import data as data_mod
from backends import spec
from bench import cli, floors, output, results, run_all, sysinfo
from bench.check import check_trainer
from bench.timing import ENVIRONMENT_KEYS, batch_stream, time_training

SMOKE = "smoke (tiny model, plumbing only)"
SMOKE_SIZES = {"n_prompts": 8, "d_model": 16, "n_cycles": 3}
EQUIVALENCE_KEYS = ("verdict", "worst", "deviations", "tolerances")  # what `bench time --check` keeps


@dataclasses.dataclass(frozen=True)
class Rung:
    """One step of the ladder. `options` are the trainer options set by hand (the others take
    their defaults); `needs` is None, "cuda", "cpu", or "multi" (>= 2 GPUs, or --cpu-ranks on a
    CPU)."""

    key: str
    what: str
    builds_on: str | None  # the rung this one changes (None: the baseline)
    backend: str
    options: dict = dataclasses.field(default_factory=dict, hash=False)
    needs: str | None = None


ORIGINAL_LOOP = {"optimizer": "default", "host_loop": True}  # the original's AdamW and host loop
FUSED = {"optimizer": "fused"}
COMPILED = {**FUSED, "compile": True}
RUNGS = (
    Rung("reference", "the original model and loop (torch.optim.AdamW default)", None, "reference"),
    Rung("r2", "mask once per batch; (B,P,C,D) expansion collapsed into M·E", "reference", "torch",
         {"variant": "r2", **ORIGINAL_LOOP}),
    Rung("r3", "the cells stacked, batched ops (bmm over cells)", "r2", "torch",
         {"variant": "r3", **ORIGINAL_LOOP}),
    Rung("r4", "downstream head reassociated: no (B,N,P,D) tensor", "r3", "torch",
         {"variant": "r4", **ORIGINAL_LOOP}),
    Rung("r5", "embedding LayerNorm affine folded: E never built", "r4", "torch",
         {"variant": "r5", **ORIGINAL_LOOP}),
    Rung("resident", "trainer on device: data resident, losses read lazily", "r5", "torch",
         {"optimizer": "default"}),
    Rung("fused", "fused AdamW (one kernel over all parameters)", "resident", "torch", FUSED),
    Rung("amp", "autocast to bf16 (fp16 + GradScaler on GPUs without bf16)", "fused", "torch",
         {**FUSED, "amp": "bf16"}),
    Rung("compile", "torch.compile of forward + backward (exact path, no AMP)", "fused", "torch", COMPILED),
    Rung("r5-fused", "fused C++ kernels: H = relu(xW+b) never stored; the mask in one pass per cell",
         "fused", "torch", {**FUSED, "variant": "r5-fused"}, needs="cpu"),
    Rung("r5-fused+compile", "the fused kernels inside the compiled step", "compile", "torch",
         {**COMPILED, "variant": "r5-fused"}, needs="cpu"),
    Rung("cuda_graphs", "whole step (fwd, bwd, fused AdamW) captured in one CUDA graph", "compile", "torch",
         {**COMPILED, "cuda_graphs": True}, needs="cuda"),
    Rung("cells", "cell parallel over G processes (torchrun; shared gradients all-reduced)", "compile",
         "torch", {**COMPILED, "parallel": "cells"}, needs="multi"),
)
KEYS = [r.key for r in RUNGS]


def rung_keys(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in KEYS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown rung(s) {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(KEYS)}")
    return keys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="torch", choices=["torch"], help="only torch has a ladder")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--data", default=None, help="default synthetic:small (synthetic:tiny with --smoke)")
    p.add_argument("--seconds", type=cli.positive_number, default=None,
                   help="timed budget per rung, all 3 repeats (default 20; 1 with --smoke)")
    p.add_argument("--reference-steps", type=cli.positive_int, default=1,
                   help="timed reference steps per repeat (~17 s each on a CPU)")
    p.add_argument("--threads", type=cli.positive_int, default=None,
                   help="torch threads (default: $OMP_NUM_THREADS, else all cores)")
    p.add_argument("--only", type=rung_keys, default=None, help="comma-separated rung keys "
                   f"({', '.join(KEYS)}); the reference always runs")
    p.add_argument("--cpu-ranks", type=cli.count, default=0,
                   help="on cpu, run the cells rung as this many gloo processes (threads split between them)")
    p.add_argument("--profile", action="store_true", help="torch.profiler's top ops of each timed rung")
    p.add_argument("--no-malloc-env", action="store_true",
                   help="do not re-execute with `bench all`'s allocator settings for the fast backends")
    p.add_argument("--smoke", action="store_true", help=f"{SMOKE}: checks that everything runs")
    p.add_argument("--out", default=None,
                   help="directory for the files (default: runs/<run id>/, untracked; `results` publishes)")


def run(args: argparse.Namespace) -> int:
    reexec_with_allocator_env(args)
    import torch

    data = args.data or ("synthetic:tiny" if args.smoke else "synthetic:small")
    seconds = args.seconds or (1.0 if args.smoke else 20.0)
    dataset = data_mod.load_dataset(data, seed=spec.SEED)
    cfg = spec.TromptConfig(n_columns=dataset.n_columns, **(SMOKE_SIZES if args.smoke else {}))
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or sysinfo.cores_in_use() or 1)
    torch.set_num_threads(threads)  # the reference's threads; the torch rungs get them as an option
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    wanted = {"reference", *(args.only or KEYS)}
    peaks = floors.machine_peaks(args.device, cfg, square=512 if args.smoke else 2048)

    rows: dict[str, dict] = {}
    profiles: dict[str, list] = {}
    for rung in (r for r in RUNGS if r.key in wanted):
        row = {"key": rung.key, "what": rung.what, "builds_on": rung.builds_on, "backend": rung.backend}
        reason = missing_hardware(rung.needs, args.device, args.cpu_ranks)
        print(f"== {rung.key}: {'skipped: ' + reason if reason else rung.what}", file=sys.stderr, flush=True)
        if reason:
            rows[rung.key] = {**row, "skipped": reason}
            continue
        options = rung_options(rung, args.device, threads)
        if rung.needs == "multi":
            rows[rung.key] = {**row, **time_cells(options, args, cfg, data, seconds, run_id, peaks)}
            continue
        reset_peak_memory(args.device)
        is_ref = rung.backend == "reference"
        result = time_training(rung.backend, args.device, "float32", dataset, cfg, warmup=1 if is_ref else 3,
                               steps=args.reference_steps if is_ref else None, seconds=seconds,
                               seed=spec.SEED, options=options)
        result["options_given"] = options
        verdict = check_trainer(rung.backend, args.device, "float32", options)
        result["equivalence"] = {k: verdict[k] for k in EQUIVALENCE_KEYS}
        result["floors"] = floors.floors(rung.backend, options, args.device, cfg, dataset, peaks)
        if args.profile:
            profiles[rung.key] = top_ops(rung, options, args.device, cfg, dataset)
        rows[rung.key] = {**row, **result}
        print(f"   {result['samples_per_sec']:.2f} samples/s; check: {verdict['verdict']}", file=sys.stderr)

    add_ratios(rows)
    record = {
        "ladder": "torch", "device": args.device, "smoke": args.smoke,
        "device_name": backends.load("torch", args.device).device_name(), "threads": threads,
        "data": dataset.source, "batch_size": spec.BATCH_SIZE, "config": cfg.to_dict(),
        "torch": torch.__version__, "git_commit": sysinfo.git_commit(), "run_id": run_id,
        "environment": {k: os.environ[k] for k in ENVIRONMENT_KEYS if k in os.environ},
        "machine_peaks": peaks, "load_average_end": os.getloadavg(), "rows": list(rows.values()),
        "profiles": profiles,
    }
    stem = Path(args.out or f"runs/{run_id}") / f"ladder_torch_{args.device}{'_smoke' if args.smoke else ''}"
    table = markdown(record)
    output.write_json(stem.with_suffix(".json"), record)
    output.write_text(stem.with_suffix(".md"), table)
    bar_chart(record, stem.with_suffix(".png"))
    print(table)
    print(f"wrote {stem}.{{json,md,png}}", file=sys.stderr)
    return 0


def reexec_with_allocator_env(args: argparse.Namespace) -> None:
    """The torch rungs run with `bench all`'s allocator settings for the fast backends
    (run_all.FAST_BACKEND_ENV). glibc reads them only when a process starts, so `python -m bench
    ladder` re-executes itself once with them; the reference rung shares the process, and the
    settings (each row records its environment)."""
    env = run_all.environment_for("torch")
    if args.no_malloc_env or sys.argv[1:2] != ["ladder"] or all(
            os.environ.get(k) == v for k, v in run_all.FAST_BACKEND_ENV.items()):
        return
    os.execve(sys.executable, [sys.executable, "-m", "bench", *sys.argv[1:]], env)


# ---------------------------------------------------------------------------------------------
# Rungs


def rung_options(rung: Rung, device: str, threads: int) -> dict:
    if rung.backend == "reference":
        return dict(rung.options)
    options = {**rung.options, "threads": threads}
    if options.get("amp") == "bf16":  # T4-class cards emulate bf16: fp16 with a GradScaler there
        options["amp"] = backends.load("torch", device=device).preferred_amp()
    return options


def missing_hardware(needs: str | None, device: str, cpu_ranks: int) -> str | None:
    if needs == "cuda" and device != "cuda":
        return "needs CUDA"
    if needs == "cpu" and device != "cpu":
        return "CPU kernels (C++)"
    if needs == "multi" and device == "cpu" and cpu_ranks < 2:
        return "needs >= 2 CUDA GPUs (or --cpu-ranks 2 for gloo processes on this CPU)"
    if needs == "multi" and device == "cuda":
        import torch

        if torch.cuda.device_count() < 2:
            return "needs >= 2 CUDA GPUs"
    return None


def reset_peak_memory(device: str) -> None:
    """Each row's peak is its own: torch's CUDA peak and Linux's RSS high-water mark (which
    getrusage's ru_maxrss, bench time's host measure, reads) are reset before the row."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def time_cells(options: dict, args: argparse.Namespace, cfg: spec.TromptConfig, data: str, seconds: float,
               run_id: str, peaks: dict) -> dict:
    """`bench time --check` under torchrun over every GPU (or --cpu-ranks gloo processes, which
    split this run's threads); its JSON is the row. The ranks agree on the step count themselves;
    their floors use this run's machine peaks (a rank's own, measured with its share of the
    threads, would not compare with the other rows)."""
    import torch

    ranks = torch.cuda.device_count() if args.device == "cuda" else args.cpu_ranks
    env = {**run_all.environment_for("torch"), "TROMPT_RUN_ID": run_id}
    if args.device == "cpu":
        options = {**options, "threads": max(1, options["threads"] // ranks)}
        env["OMP_NUM_THREADS"] = str(options["threads"])
    sizes = [f"--{k.replace('_', '-')}={getattr(cfg, k)}" for k in SMOKE_SIZES]
    with tempfile.TemporaryDirectory() as tmp:
        path, peaks_path = Path(tmp) / "cells.json", Path(tmp) / "peaks.json"
        output.write_json(peaks_path, peaks)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "bench", "time", "--backend", "torch", "--device", args.device, "--data", data,
               "--seconds", str(seconds), *sizes, "--check", "--quiet", "--json", str(path),
               "--machine-peaks", str(peaks_path),
               *[f"--opt={k}={v}" for k, v in options.items()]]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        except subprocess.TimeoutExpired:
            return {"skipped": "torchrun did not finish within an hour"}
        if done.returncode != 0 or not path.exists():
            return {"skipped": f"torchrun failed: {' '.join(done.stderr.strip().splitlines()[-1:])}"}
        result = results.read_result(path)
    return {**{k: v for k, v in result.items() if k != "_file"}, "ranks": ranks}


def top_ops(rung: Rung, options: dict, device: str, cfg: spec.TromptConfig, dataset: data_mod.Dataset,
            n_ops: int = 8) -> list[dict]:
    """The most expensive ops (self time per step) of a fresh trainer's warm steps, from its own
    profiler (Trainer.op_times; torch.profiler for the torch rungs)."""
    trainer = backends.load(rung.backend, device=device).trainer(
        spec.init_params(cfg, spec.SEED, "float32"), cfg, dataset.x_train, dataset.y_train, **options)
    warmup, steps = (1, 1) if rung.backend == "reference" else (3, 5)
    stream = batch_stream(len(dataset.x_train), spec.BATCH_SIZE, spec.SEED)
    for _ in range(warmup):
        trainer.run([next(stream)])
    trainer.sync()
    ops = trainer.op_times([next(stream) for _ in range(steps)]) or []
    total = sum(seconds for _, seconds, _ in ops) or 1.0
    return [{"op": name, "ms_per_step": 1e3 * seconds / steps, "share": seconds / total,
             "calls_per_step": calls / steps} for name, seconds, calls in ops[:n_ops]]


def add_ratios(rows: dict[str, dict]) -> None:
    """× reference, and × the nearest rung it builds on that ran (`x_previous_of` names it)."""
    parent = {r.key: r.builds_on for r in RUNGS}
    ref = rows["reference"].get("samples_per_sec")
    for row in rows.values():
        sps = row.get("samples_per_sec")
        if not sps:
            continue
        base = parent[row["key"]]
        while base and not rows.get(base, {}).get("samples_per_sec"):
            base = parent[base]
        row["x_reference"] = sps / ref if ref else None
        row["x_previous"] = sps / rows[base]["samples_per_sec"] if base else None
        row["x_previous_of"] = base


# ---------------------------------------------------------------------------------------------
# Table and chart


def title(record: dict) -> str:
    smoke = f", {SMOKE}," if record["smoke"] else ""
    return f"Torch ladder{smoke} on **{record['device_name']}**"


def markdown(record: dict) -> str:
    num, peaks = results.number, record["machine_peaks"]
    header = ["step", "what changed", "samples/s", "× reference", "× the step it builds on", "first step s",
              "peak MB", "equivalence (worst dev.)", "GEMM GFLOP/sample", "% of compute floor"]
    body = []
    for r in record["rows"]:
        if r.get("skipped"):
            body.append([r["key"], r["what"], f"skipped: {r['skipped']}"] + [""] * 7)
            continue
        floor = r.get("floors") or {}
        flops = floor.get("gemm_flops_per_sample")
        share = 100 * r["samples_per_sec"] / floor["compute_floor_sps"] if floor else None
        base = r.get("x_previous_of")
        previous = f"{num(r.get('x_previous'), ',.2f')} ({base})" if base else ""
        body.append([r["key"], r["what"] + (f" ({r['ranks']} ranks)" if r.get("ranks") else ""),
                     results.speed_text(r["samples_per_sec"]) + (" (unsteady)" if r.get("unsteady") else ""),
                     num(r.get("x_reference"), ",.1f"), previous, num(r.get("compile_time_s"), ",.2f"),
                     num(r.get("peak_memory_mb"), ",.0f"), results.equivalence_text(r),
                     num(flops / 1e9 if flops else None, ".3g"), num(share, ".1f")])
    load = ", ".join(f"{x:.1f}" for x in record["load_average_end"])
    shape = "×".join(map(str, peaks["gemm_model_shape"]))
    onednn = ("" if "gemm_gflops_square_onednn" not in peaks else  # torch's MKL above, oneDNN here
              f" with torch.mm/bmm (MKL); {peaks['gemm_gflops_square_onednn']:.3g} / "
              f"{peaks['gemm_gflops_model_onednn']:.3g} GFLOP/s with oneDNN")
    memory_floor = next((r["floors"]["memory_floor_sps"] for r in record["rows"] if r.get("floors")), None)
    lines = [
        f"{title(record)} ({record['device']}, {record['threads']} threads, torch {record['torch']}, "
        f"commit {record['git_commit']}), batch {record['batch_size']}, data {record['data']}, config "
        f"{record['config']}, float32. Every rung timed as `bench time` times it (warm-up apart, the "
        f"median of 3 repeats) in ONE run; load average at the end {load}.",
        "",
        output.markdown_table(header, body, "llrrrrrlrr"),
        "",
        "Peak MB: device memory where torch reports it, else the process's peak RSS during the row "
        "(the high-water mark is reset before each row; the cells row: rank 0's process). "
        "Equivalence: `bench check` on the row's own backend and options against the float64 "
        "reference (the reference row: itself in float32); "
        "\"(unsteady)\": its repeats spread by more than 1.5×. Measured in the same run: GEMM "
        f"{peaks['gemm_gflops_square']:.3g} GFLOP/s ({peaks['gemm_square']}²) / "
        f"{peaks['gemm_gflops_model']:.3g} GFLOP/s (the model's own products, {shape}){onednn}, copy "
        f"{peaks['copy_gb_per_s']:.1f} GB/s. Compute floor = GEMM FLOPs at the best GEMM rate "
        f"(element-wise work ignored); the optimizer-traffic floor is {num(memory_floor, ',.0f')} samples/s "
        "(24 B per parameter per step).",
    ]
    for key, ops in record["profiles"].items():
        rows = [[o["op"], f"{o['ms_per_step']:.2f}", f"{100 * o['share']:.0f}%", f"{o['calls_per_step']:.0f}"]
                for o in ops]
        lines += ["", f"Top ops, `{key}` (self time per step):", "",
                  output.markdown_table(["op", "ms/step", "share", "calls/step"], rows, "lrrr")]
    return "\n".join(lines) + "\n"


def bar_chart(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in record["rows"] if r.get("samples_per_sec")][::-1]
    values = [r["samples_per_sec"] for r in done]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(done) + 1.5))
    passed = [(r.get("equivalence") or {}).get("verdict") == "pass" for r in done]
    ax.barh([r["key"] for r in done], values, color=["tab:blue" if ok else "tab:orange" for ok in passed])
    ax.set_xscale("log")
    for i, r in enumerate(done):
        ax.text(values[i], i, f"  {results.speed_text(values[i])}  ({r.get('x_reference') or 1:,.3g}×)",
                va="center", fontsize=8)
    ax.set_xlabel("training samples/s at batch 8 (log scale; orange = the check did not pass)")
    ax.set_title(title(record).replace("**", ""), fontsize=9)
    ax.set_xlim(min(values) / 2, max(values) * 20)
    fig.tight_layout()
    output.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
