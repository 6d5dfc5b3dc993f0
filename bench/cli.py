"""`python -m bench`: time, train, check and compare Trompt backends.

    python -m bench --backend torch --device cpu --seconds 20 --json out.json   # time (default)
    python -m bench train --backend torch --epochs 5                           # the original protocol
    python -m bench check --backend jax --dtype float64 --opt variant=r3       # vs the float64 reference
    python -m bench options --backend torch                                    # what --opt accepts
    python -m bench list                                                       # registered backends
    python -m bench all                                                        # what `make bench` runs
    python -m bench ladder --backend torch --device cpu                        # torch speed-up ladder
    python -m bench compare runs/X/*.json | report | minitorch

Results: `bench time --json PATH` writes one file (an existing one only with --force); `bench all`
and `make bench` write runs/<run id>/ (untracked); results/ holds the published figures.

Bad input (unknown backend/device/option, a number out of range, bad data) prints one line on
stderr and exits with code 2; a run that stops (a non-finite training loss) exits with code 3.
Frameworks are imported only through `backends.load`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable

import backends
from backends import spec

# Command name -> (module that implements it, one-line description). Each module has
# add_arguments(parser) and run(args) -> exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "time": ("bench.commands", "time training steps of one backend (the default command)"),
    "train": ("bench.commands", "run the original training protocol and print the validation MAE"),
    "check": ("bench.commands", "compare a configured trainer with the float64 reference trainer"),
    "options": ("bench.commands", "list the trainer options (--opt) a backend accepts"),
    "list": ("bench.commands", "list the registered backends and whether each is installed"),
    "calibrate": ("bench.check", "derive the float32 check tolerances from the reference's own rounding"),
    "compare": ("bench.commands", "markdown table of result files with speed ratios"),
    "all": ("bench.run_all", "time every installed backend, one process each (what `make bench` runs)"),
    "peer": ("bench.peer", "time pytorch-frame's Trompt (another model, not checked) with our protocol"),
    "ab": ("bench.ab", "time configurations of one backend against each other, interleaved in one run"),
    "sweep": ("bench.sweep", "how step time and memory grow with the batch size and the column count"),
    "profile": ("bench.profile", "where a backend's steady steps spend CPU time, per thread (Linux perf)"),
    "ladder": ("bench.ladder", "the torch speed-up ladder, every rung timed and checked in one run"),
    "report": ("bench.report", "rebuild the results section of docs/REPORT.md from result files"),
    "minitorch": ("bench.minitorch_bench", "time minitorch's fast ops against its simple ops and numpy"),
    "roofline": ("bench.roofline", "roofline ESTIMATES of the torch ladder rungs on GPUs and a TPU"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2, as argparse does)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}\n")


class Stopped(Exception):
    """A run that cannot go on (e.g. a non-finite training loss): one line, exit code 3."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every default and keeps the descriptions' line breaks."""


# ---------------------------------------------------------------------------------------------
# Numbers checked where flags are parsed


def at_least(minimum: float, kind: type = int) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def positive_number(text: str) -> float:
    value = at_least(0.0, float)(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value  # type: ignore[return-value]


positive_int, count = at_least(1), at_least(0)


def parse_options(pairs: list[str], parallel: str | None = None) -> dict[str, str]:
    """`--opt key=value` pairs as text; the backend parses each against its declared options."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt expects key=value, got {pair!r}")
        options[key] = value
    if parallel:
        options["parallel"] = parallel
    return options


def is_main_process() -> bool:
    """Under torchrun only rank 0 prints and writes files."""
    return os.environ.get("RANK", "0") == "0"


# ---------------------------------------------------------------------------------------------
# Arguments shared by several commands


def add_backend_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--backend", required=required, default=None if required else "torch",
                   help=f"one of {', '.join(backends.REGISTRY)}")
    p.add_argument("--device", default="cpu", help="cpu, cuda, gpu, tpu, xla (what the backend offers)")
    p.add_argument("--dtype", default="float32", choices=spec.DTYPES)


def add_trainer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="trainer option, repeatable (`bench options --backend X` lists them)")
    p.add_argument("--parallel", default=None, help="multi-device mode (an option too), e.g. ddp, cells, "
                   "pmap, sharding")


def add_model_args(p: argparse.ArgumentParser) -> None:
    defaults = spec.TromptConfig()
    p.add_argument("--n-prompts", type=positive_int, default=defaults.n_prompts)
    p.add_argument("--d-model", type=positive_int, default=defaults.d_model)
    p.add_argument("--n-cycles", type=positive_int, default=defaults.n_cycles)
    p.add_argument("--n-columns", type=positive_int, default=None,
                   help=f"feature columns C: the width of synthetic data (default {defaults.n_columns}); "
                        "real data must have this many")


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_trainer_args(p)
    add_data_args(p)
    add_output_args(p)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The data, the batch size, the seed and the model's sizes."""
    p.add_argument("--data", default="synthetic:small",
                   help="synthetic:tiny|small|full, or a directory with train.pt/val.pt or train.npz/val.npz")
    p.add_argument("--batch-size", type=positive_int, default=spec.BATCH_SIZE,
                   help="8 is the original protocol; another size is not the original computation")
    p.add_argument("--seed", type=count, default=spec.SEED)
    add_model_args(p)


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON (atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bench", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"bench (trompt-bench {project_version()})")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser, metavar="COMMAND")
    for name, (_, description) in COMMANDS.items():
        p = sub.add_parser(name, help=description, description=description, formatter_class=HelpFormatter)
        command_parts(name)[0](p)
    return parser


def command_parts(name: str) -> tuple[Callable, Callable]:
    """(add_arguments, run) of a command: from its module's COMMANDS table, or the module itself."""
    module = importlib.import_module(COMMANDS[name][0])
    if hasattr(module, "COMMANDS"):
        return module.COMMANDS[name]
    return module.add_arguments, module.run


def project_version() -> str:
    try:
        return importlib.metadata.version("trompt-bench")
    except importlib.metadata.PackageNotFoundError:
        return "source checkout"


def normalise_argv(argv: list[str]) -> list[str]:
    """`python -m bench --backend X` means `bench time --backend X`; a mistyped or misplaced
    command is a one-line error with a hint."""
    if not argv or argv[0] in ("-h", "--help", "--version") or argv[0] in COMMANDS:
        return argv
    if not argv[0].startswith("-"):
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; commands: {', '.join(COMMANDS)}"
        raise SystemExit(f"error: bench: unknown command '{argv[0]}'{hint}")
    misplaced = [a for a in argv if a in COMMANDS]
    if misplaced:
        raise SystemExit(f"error: bench: the command goes first: bench {misplaced[0]} "
                         f"{' '.join(a for a in argv if a != misplaced[0])}")
    return ["time", *argv]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    try:
        argv = normalise_argv(argv)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    handler = command_parts(args.command)[1]
    try:
        return handler(args)
    except ValueError as e:  # bad input: one line, exit 2
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except Stopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a failure inside a framework: one line, unless asked for the traceback
        if os.environ.get("TROMPT_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {first} (set TROMPT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
