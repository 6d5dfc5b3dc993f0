"""Command line: the pass table and the rule checker.

    python -m puzzles                                  # every puzzle on every backend
    python -m puzzles --backends numpy,torch --examples 50 --seed 1
    python -m puzzles check [FILE]                     # rule checker (default: puzzles/solutions.py)

Exit status: 0 when everything passes, 1 when a puzzle fails or a rule is broken, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from puzzles.backends import NAMES
from puzzles.catalog import PUZZLE_NAMES
from puzzles.harness import Tally, run_table
from puzzles.rules import SOLUTIONS_FILE, check_file


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 2, without the usage block."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def run_check(path: Path) -> int:
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    try:
        violations = check_file(path)
    except SyntaxError as error:
        print(f"error: {path} is not valid Python: {error}", file=sys.stderr)
        return 2
    for violation in violations:
        print(violation)
    print(f"{path}: {len(violations)} rule violation(s) in {len(PUZZLE_NAMES)} puzzles")
    return 1 if violations else 0


def format_table(table: dict[str, dict[str, Tally | str]]) -> str:
    backends = list(table)
    width = max(len(name) for name in PUZZLE_NAMES) + 4
    column = max(10, *(len(b) + 2 for b in backends))
    lines = ["puzzle".ljust(width) + "".join(b.rjust(column) for b in backends)]
    for number, name in enumerate(PUZZLE_NAMES, start=1):
        cells = []
        for backend in backends:
            tally = table[backend][name]
            if isinstance(tally, str):
                cells.append("n/a".rjust(column))
            else:
                mark = "ok" if tally.passed == tally.total else "FAIL"
                cells.append(f"{mark} {tally.passed}/{tally.total}".rjust(column))
        lines.append(f"{number:>2} {name}".ljust(width) + "".join(cells))
    return "\n".join(lines)


def run_pass_table(backends: list[str], examples: int, seed: int) -> int:
    table = run_table(backends, examples=examples, seed=seed,
                      progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(table))
    failed = False
    for backend, row in table.items():
        reasons = {tally for tally in row.values() if isinstance(tally, str)}
        for reason in reasons:
            print(f"{backend}: not run: {reason}")
            failed = True
        for tally in row.values():
            if isinstance(tally, Tally):
                for failure in tally.failures[:3]:
                    print(f"{backend}: {failure}")
                failed = failed or bool(tally.failures)
    print(f"cases per cell: the puzzle's edge cases, then {examples} random cases (seed {seed})")
    if "minitorch" in table:
        print("minitorch cells leave out the edge cases with zero-size tensors, which minitorch cannot hold")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "check":
        parser = OneLineErrors(prog="python -m puzzles check", description="the rule checker")
        parser.add_argument("file", nargs="?", type=Path, default=SOLUTIONS_FILE)
        return run_check(parser.parse_args(argv[1:]).file)
    parser = OneLineErrors(prog="python -m puzzles", description="pass table, puzzle x backend")
    choices = ", ".join(NAMES)
    parser.add_argument("--backends", default=",".join(NAMES), help=f"comma-separated, from {choices}")
    parser.add_argument("--examples", type=int, default=10, help="random cases per puzzle (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = [b for b in backends if b not in NAMES]
    if unknown or not backends:
        parser.error(f"unknown backend(s) {', '.join(unknown) or '(none given)'}; choose from {choices}")
    if args.examples < 0:
        parser.error("--examples must be >= 0")
    return run_pass_table(backends, args.examples, args.seed)


if __name__ == "__main__":
    sys.exit(main())
