"""`python -m bench`: time, train, check and compare Trompt backends.

    python -m bench --backend torch --device cpu --seconds 20 --json out.json   # time (default)
    python -m bench train --backend torch --epochs 5                           # the original protocol
    python -m bench check --backend jax --dtype float64                        # vs the reference
    python -m bench compare results/a.json results/b.json                      # markdown table
    python -m bench all                                                        # what `make bench` runs
    python -m bench ladder --backend torch --device cpu                        # torch speed-up ladder
    python -m bench minitorch                                                  # minitorch fast ops

Bad input (unknown backend/device/option, bad data path, malformed file) prints one line on
stderr and exits with code 2. Frameworks are imported only through `backends.load`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

import backends
from backends import spec

SUBCOMMANDS = ("time", "train", "check", "compare", "all", "ladder", "minitorch", "report")
# Sub-commands implemented in their own modules (owned by the issue that brings them).
PLUGINS = {"ladder": "bench.ladder", "minitorch": "bench.minitorch_bench", "report": "bench.report"}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2, as argparse does)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}\n")


def parse_value(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(pairs: list[str], parallel: str | None = None) -> dict:
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt expects key=value, got {pair!r}")
        options[key] = parse_value(value)
    if parallel:
        options["parallel"] = parallel
    return options


def is_main_process() -> bool:
    """Under torchrun only rank 0 prints and writes files."""
    return os.environ.get("RANK", "0") == "0"


# ---------------------------------------------------------------------------------------------
# Arguments shared by several sub-commands


def add_backend_args(p: argparse.ArgumentParser, default_backend: str | None = None) -> None:
    p.add_argument("--backend", default=default_backend, required=default_backend is None,
                   help=f"one of {', '.join(backends.REGISTRY)}")
    p.add_argument("--device", default="cpu", help="cpu, cuda, gpu, tpu, xla (what the backend offers)")
    p.add_argument("--dtype", default="float32", choices=spec.DTYPES)


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic:small",
                   help="synthetic:tiny|small|full, or a directory with train.pt/val.pt or train.npz/val.npz")
    p.add_argument("--batch-size", type=int, default=spec.BATCH_SIZE, help="8 is the original protocol")
    p.add_argument("--seed", type=int, default=spec.SEED)
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="backend trainer option, repeatable (e.g. variant=r5, compile=true, amp=bf16)")
    p.add_argument("--parallel", default=None, help="multi-device mode, e.g. ddp, cells, pmap, sharding")
    p.add_argument("--n-prompts", type=int, default=128)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-cycles", type=int, default=6)
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON (atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def config_for(args: argparse.Namespace, n_columns: int) -> spec.TromptConfig:
    return spec.TromptConfig(n_columns=n_columns, n_prompts=args.n_prompts, d_model=args.d_model,
                             n_cycles=args.n_cycles)


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bench", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)

    p = sub.add_parser("time", help="time training steps of one backend (the default command)")
    add_backend_args(p)
    add_run_args(p)
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default: from --seconds)")
    p.add_argument("--seconds", type=float, default=20.0, help="time budget for the timed repeats")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first; the first is the compile time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check", action="store_true", help="also run the equivalence check and record it")

    p = sub.add_parser("train", help="run the original training protocol and print validation MAE")
    add_backend_args(p)
    add_run_args(p)
    p.add_argument("--epochs", type=int, default=spec.EPOCHS)
    p.add_argument("--max-steps", type=int, default=None, help="cap the steps per epoch (smoke runs)")
    p.add_argument("--checkpoint-dir", default=None, help="save checkpoints (npz + json, atomic) here")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="save every K steps (0: only at the end of the run)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir")

    p = sub.add_parser("check", help="compare a backend with the float64 reference (forward, grads, AdamW)")
    add_backend_args(p)
    p.add_argument("--all-rows", action="store_true", help="one row per parameter tensor")
    p.add_argument("--json", default=None, metavar="PATH")

    p = sub.add_parser("compare", help="markdown table of result JSON files with speed ratios")
    p.add_argument("files", nargs="+")
    p.add_argument("--force", action="store_true", help="compare results of different configs anyway")

    p = sub.add_parser("all", help="time every installed backend in one run (what `make bench` does)")
    p.add_argument("--backends", default=None, help="comma-separated subset (default: all installed)")
    p.add_argument("--data", default="synthetic:small")
    p.add_argument("--batch-size", type=int, default=spec.BATCH_SIZE)
    p.add_argument("--dtype", default="float32", choices=spec.DTYPES)
    p.add_argument("--seconds", type=float, default=15.0, help="time budget per backend")
    p.add_argument("--reference-seconds", type=float, default=40.0, help="time budget for the reference")
    p.add_argument("--out", default="results", help="directory for the JSON files and the table")

    for name, module in PLUGINS.items():
        if importlib.util.find_spec(module) is not None:
            plugin = importlib.import_module(module)
            p = sub.add_parser(name, help=(plugin.__doc__ or name).strip().splitlines()[0])
            plugin.add_arguments(p)
    return parser


# ---------------------------------------------------------------------------------------------
# Sub-commands


def cmd_time(args: argparse.Namespace) -> int:
    from backends.data import load_dataset
    from bench import results
    from bench.check import check_backend
    from bench.timing import time_training

    check_batch_size(args.batch_size)
    options = parse_options(args.opt, args.parallel)
    backends.load(args.backend, device=args.device, dtype=args.dtype)  # fail fast on bad names
    dataset = load_dataset(args.data, seed=args.seed)
    for note in dataset.notes:
        print(f"note: {note}", file=sys.stderr)
    cfg = config_for(args, dataset.n_columns)
    result = time_training(args.backend, args.device, args.dtype, dataset, cfg, args.batch_size,
                           args.warmup, args.repeats, args.steps, args.seconds, args.seed, options,
                           progress=not args.quiet and is_main_process())
    if args.check:
        verdict = check_backend(args.backend, args.device, args.dtype)
        result["equivalence"] = {k: verdict[k] for k in ("verdict", "max_rel_dev", "tolerance", "config")}
    if is_main_process():
        print(f"{result['backend']} {result['device']} {result['dtype']}: "
              f"{result['samples_per_sec']:,.1f} samples/s, {result['step_time_ms']:.2f} ms/step "
              f"(batch {result['batch_size']}), first step {result['compile_time_s']:.2f} s")
        if args.json:
            results.write_json_atomic(args.json, result)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from backends.data import load_dataset
    from bench import results
    from bench.train import train

    check_batch_size(args.batch_size)
    options = parse_options(args.opt, args.parallel)
    backends.load(args.backend, device=args.device, dtype=args.dtype)
    dataset = load_dataset(args.data, seed=args.seed)
    for note in dataset.notes:
        print(f"note: {note}", file=sys.stderr)
    cfg = config_for(args, dataset.n_columns)
    out = train(args.backend, args.device, args.dtype, dataset, cfg, args.epochs, args.batch_size,
                args.seed, options, args.max_steps, progress=not args.quiet and is_main_process(),
                checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                resume=args.resume)
    out.pop("params")
    if args.json and is_main_process():
        results.write_json_atomic(args.json, out)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from bench import results
    from bench.check import check_backend, format_report

    verdict = check_backend(args.backend, args.device, args.dtype)
    print(format_report(verdict, full=args.all_rows))
    if args.json:
        results.write_json_atomic(args.json, verdict)
    return 0 if verdict["verdict"] == "pass" else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from bench import results

    loaded = [results.read_result(f) for f in args.files]
    keys = {results.comparable_key(r) for r in loaded}
    if len(keys) > 1 and not args.force:
        raise ValueError("these results used different configs, batch sizes or data; pass --force to "
                         "compare them anyway")
    print(results.markdown_table(loaded))
    return 0


def cmd_all(args: argparse.Namespace) -> int:
    from bench.run_all import run_all

    return run_all(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "time")  # `python -m bench --backend X` is the time command
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"time": cmd_time, "train": cmd_train, "check": cmd_check, "compare": cmd_compare,
                "all": cmd_all}
    handler = handlers.get(args.command)
    if handler is None:
        if args.command not in PLUGINS or importlib.util.find_spec(PLUGINS[args.command]) is None:
            parser.error(f"the {args.command!r} command is not available in this checkout")
        handler = importlib.import_module(PLUGINS[args.command]).run
    try:
        return handler(args)
    except ValueError as e:  # bad input: one line, exit 2
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a failure inside a framework: one line, unless asked for the traceback
        if os.environ.get("TROMPT_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {first} (set TROMPT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
