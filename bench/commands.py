"""The commands that drive one backend: time, train, check, options, list, compare.

Each has an `add_*` function (its flags) and a `cmd_*` function (what it does); COMMANDS pairs
them for bench/cli.py. Every number a user types is range-checked when the flags are parsed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import backends
from backends import spec
from bench import cli, output


def add_timing_args(p: argparse.ArgumentParser, seconds: float, warmup: int, first_step: str) -> None:
    """--steps, --seconds, --warmup and --repeats of bench.timing.measure, with these defaults;
    `first_step` says what the first warm-up step carries."""
    p.add_argument("--steps", type=cli.positive_int, default=None,
                   help="timed steps per repeat (default: as many as --seconds allows)")
    p.add_argument("--seconds", type=cli.positive_number, default=seconds,
                   help="time budget for the warm-up steps and the timed repeats")
    p.add_argument("--warmup", type=cli.positive_int, default=warmup,
                   help=f"untimed steps first (plus the short last batch); {first_step}")
    p.add_argument("--repeats", type=cli.positive_int, default=3)


def add_time(p: argparse.ArgumentParser) -> None:
    cli.add_backend_args(p)
    cli.add_run_args(p)
    add_timing_args(p, seconds=20.0, warmup=3, first_step="the first is the compile time")
    p.add_argument("--check", action="store_true",
                   help="also check this exact configuration against the float64 reference and record it")
    p.add_argument("--machine-peaks", default=None, metavar="PATH",
                   help="the machine's GEMM rate and copy bandwidth measured once for a whole run "
                        "(python -m bench.floors PATH); default: measure them here (a few seconds)")
    p.add_argument("--no-floors", action="store_true", help="do not measure or record the floors")
    p.add_argument("--cores", type=cli.positive_int, default=None,
                   help="run on this many of the cores this process may use, thread pools sized to "
                        "match (e.g. 1 for the single-core row; default: all)")


def add_train(p: argparse.ArgumentParser) -> None:
    cli.add_backend_args(p)
    cli.add_run_args(p)
    p.add_argument("--epochs", type=cli.positive_int, default=spec.EPOCHS)
    p.add_argument("--max-steps", type=cli.positive_int, default=None,
                   help="cap the steps per epoch (smoke runs)")
    p.add_argument("--checkpoint-dir", default=None, help="save checkpoints (npz + json, atomic) here")
    p.add_argument("--checkpoint-every", type=cli.count, default=0, metavar="K",
                   help="save every K steps (0: only at the end of each epoch)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a --checkpoint-dir that holds another run's checkpoints")


def add_check(p: argparse.ArgumentParser) -> None:
    from bench import check

    cli.add_backend_args(p)
    cli.add_trainer_args(p)
    p.add_argument("--steps", type=check.at_least_three, default=check.STEPS,
                   help="optimizer steps compared (the last one on a short batch)")
    p.add_argument("--seed", type=cli.count, default=spec.SEED)
    p.add_argument("--all-rows", action="store_true", help="one row per parameter tensor")
    cli.add_output_args(p)


def add_options(p: argparse.ArgumentParser) -> None:
    cli.add_backend_args(p)


def add_list(p: argparse.ArgumentParser) -> None:
    del p  # no flags


def add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="result JSON files of `bench time` (other files are skipped)")
    p.add_argument("--baseline", default=None,
                   help="backend (or file) the ratios are taken against (default: reference if present, "
                        "else the slowest)")
    p.add_argument("--force", action="store_true", help="compare results of different settings anyway")


# ---------------------------------------------------------------------------------------------


def load_data(args: argparse.Namespace):  # -> (dataset, config)
    from backends.data import load_dataset

    columns = args.n_columns or spec.TromptConfig().n_columns
    dataset = load_dataset(args.data, seed=args.seed, n_columns=columns)
    if args.n_columns and dataset.n_columns != args.n_columns:
        raise ValueError(f"--n-columns {args.n_columns}, but {args.data} has {dataset.n_columns} columns")
    for note in dataset.notes:
        print(f"note: {note}", file=sys.stderr)
    cfg = spec.TromptConfig(n_columns=dataset.n_columns, n_prompts=args.n_prompts, d_model=args.d_model,
                            n_cycles=args.n_cycles)
    return dataset, cfg


def refuse_existing(path: str | None, force: bool) -> None:
    if path and Path(path).exists() and not force:
        raise ValueError(f"{path} exists; pass --force to replace it, or choose another --json path")


def write_result(path: str, record: dict, force: bool) -> None:
    """--json PATH: atomically, and without --force never over a file, not even one another run
    wrote while this one was running (two runs with one --json: the second is refused)."""
    try:
        output.write_json(path, record, replace=force)
    except FileExistsError:
        raise ValueError(f"{path} was written by another run while this one ran; this result was not "
                         "saved (pass --force to replace, or choose another --json path)") from None


def cmd_time(args: argparse.Namespace) -> int:
    from bench.check import check_trainer
    from bench.timing import time_training

    refuse_existing(args.json, args.force)
    if args.cores is not None:
        from bench.sysinfo import pin_to_cores

        pin_to_cores(args.cores)
    given = cli.parse_options(args.opt, args.parallel)
    backend = backends.load(args.backend, device=args.device, dtype=args.dtype)
    options = backend.parse_options(given)  # bad options fail before the data is made
    dataset, cfg = load_data(args)
    progress = not args.quiet and cli.is_main_process()
    result = time_training(args.backend, args.device, args.dtype, dataset, cfg, args.batch_size,
                           args.warmup, args.repeats, args.steps, args.seconds, args.seed, options,
                           progress=progress)
    result["options_given"] = {k: options[k] for k in given}
    if not args.no_floors:
        result["floors"] = floors_for(result, dataset, cfg, args.machine_peaks)
    if args.check:
        verdict = check_trainer(args.backend, args.device, args.dtype, options, batch_size=args.batch_size)
        result["equivalence"] = {k: verdict[k] for k in ("verdict", "worst", "deviations", "tolerances")}
    if cli.is_main_process():
        eq = result["equivalence"]
        low, high = result["samples_per_sec_min_max"]
        busy = result["other_processes_cores"]
        print(f"{result['backend']} {result['device']} {result['dtype']}: "
              f"{result['samples_per_sec']:,.1f} samples/s (median of {result['repeats']} repeats of "
              f"{result['steps_per_repeat']} steps, {low:,.1f}-{high:,.1f}), "
              f"{result['step_time_ms']:.2f} ms/step (batch {result['batch_size']}), "
              f"first step {result['compile_time_s']:.2f} s"
              + (f", others used {busy:.2f} cores" if busy is not None else "")
              + (f", {result['floors']['percent_of_compute_floor']:.1f}% of the GEMM floor"
                 if result.get("floors") else "")
              + (f"; check: {eq['verdict']}" if eq else ""))
        if args.json:
            write_result(args.json, result, args.force)
    return 0


def floors_for(result: dict, dataset, cfg: spec.TromptConfig, peaks_path: str | None) -> dict | None:
    """The result's compute and memory floors on this machine, and how close it came to each;
    None where torch cannot measure the device (a TPU, a Metal GPU)."""
    import importlib.util
    import json

    from bench import floors

    device = result["device"]
    if device not in ("cpu", "cuda") or importlib.util.find_spec("torch") is None:
        return None
    if peaks_path:
        try:
            peaks = json.loads(Path(peaks_path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--machine-peaks {peaks_path}: not readable JSON "
                             f"({type(e).__name__})") from None
    else:
        peaks = floors.machine_peaks(device, cfg)
    bounds = floors.floors(result["backend"], result["options"], device, cfg, dataset, peaks)
    return {**bounds, **floors.percent_of_floors(result["samples_per_sec"], bounds), "machine_peaks": peaks}


def cmd_train(args: argparse.Namespace) -> int:
    from bench.train import train

    refuse_existing(args.json, args.force)
    options = cli.parse_options(args.opt, args.parallel)
    options = backends.load(args.backend, device=args.device, dtype=args.dtype).parse_options(options)
    dataset, cfg = load_data(args)
    out = train(args.backend, args.device, args.dtype, dataset, cfg, args.epochs, args.batch_size,
                args.seed, options, args.max_steps, progress=not args.quiet and cli.is_main_process(),
                checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                resume=args.resume, overwrite=args.overwrite)
    out.pop("params")
    if args.json and cli.is_main_process():
        write_result(args.json, out, args.force)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from bench.check import check_trainer, format_report

    refuse_existing(args.json, args.force)
    options = cli.parse_options(args.opt, args.parallel)
    verdict = check_trainer(args.backend, args.device, args.dtype, options, steps=args.steps, seed=args.seed)
    if cli.is_main_process():
        print(format_report(verdict, full=args.all_rows))
        if args.json:
            write_result(args.json, verdict, args.force)
    return 1 if verdict["verdict"] == "FAIL" else 0


def cmd_options(args: argparse.Namespace) -> int:
    backend = backends.load(args.backend, device=args.device, dtype=args.dtype)
    print(f"trainer options of backend {backend.name!r} (--opt KEY=VALUE):")
    for option in backend.options:
        exact = "" if option.exact is None else f" [exact only for {', '.join(map(str, option.exact))}]"
        print(f"  {option.describe()}{exact}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Each backend with its framework's version and the devices it can use here (or why not)."""
    import importlib.metadata

    del args
    for name, reg in backends.REGISTRY.items():
        if not reg.installed():
            print(f"{name:10s} not installed: pip install -e '.[{reg.extra}]'")
            continue
        cls = backends.backend_class(name)
        usable, unusable = [], []
        for device in cls.devices:
            try:
                cls(device=device)
                usable.append(device)
            except ValueError as e:
                unusable.append(f"{device}: {str(e).splitlines()[0]}")
        print(f"{name:10s} {reg.framework} {importlib.metadata.version(reg.framework)}; "
              f"devices here: {', '.join(usable) or 'none'}")
        for why in unusable:
            print(f"{'':10s}   {why}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench import results

    loaded, skipped = results.read_timing_results(args.files)
    for path, why in skipped:
        print(f"note: skipped {path}: {why}", file=sys.stderr)
    if not loaded:
        raise ValueError("none of the files is a `bench time` result")
    keys = {results.setting_key(r) for r in loaded}
    if len(keys) > 1 and not args.force:
        raise ValueError("these results used different configs, batch sizes or data; pass --force to "
                         "compare them anyway")
    print(results.comparison_table(loaded, results.pick_baseline(loaded, args.baseline)))
    return 0


COMMANDS = {
    "time": (add_time, cmd_time),
    "train": (add_train, cmd_train),
    "check": (add_check, cmd_check),
    "options": (add_options, cmd_options),
    "list": (add_list, cmd_list),
    "compare": (add_compare, cmd_compare),
}
