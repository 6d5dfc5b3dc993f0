"""Run a puzzle on a backend and compare with its loop specification.

A result passes when it has exactly the declared shape, the declared kind of dtype (integer for
every puzzle but `linspace`, which is floating point) and the spec's values (exact for integers;
within 1e-5 for `linspace`, which backends compute in float32). Integer widths are not compared:
jax, tinygrad and mlx count in int32 where numpy and torch use int64 (each backend's arange dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from puzzles import specs
from puzzles.backends import load
from puzzles.binding import bind
from puzzles.cases import EDGE_CASES, Case, RandomDraw, draw_case
from puzzles.catalog import PUZZLE_NAMES

FLOAT_PUZZLES = {"linspace"}


def expected_result(name: str, case: Case) -> np.ndarray:
    """The spec's answer as a numpy array of the declared shape."""
    spec = getattr(specs, f"{name}_spec")
    answer = spec(*(a.tolist() if isinstance(a, np.ndarray) else a for a in case.args))
    array = np.array(answer, dtype=np.float64 if name in FLOAT_PUZZLES else np.int64)
    if array.size != int(np.prod(case.shape)):
        raise AssertionError(f"{name}_spec gave {array.shape} for declared shape {case.shape}")
    return array.reshape(case.shape)  # an empty nested list has lost its trailing sizes


def compare(name: str, got: np.ndarray, case: Case) -> str | None:
    """None when `got` is right, else one line saying what is wrong."""
    expected = expected_result(name, case)
    if got.shape != case.shape:
        return f"shape {got.shape}, declared {case.shape}"
    wanted_kinds = "f" if name in FLOAT_PUZZLES else "iu"
    if got.dtype.kind not in wanted_kinds:
        return f"dtype {got.dtype}, wanted {'a float' if name in FLOAT_PUZZLES else 'an integer'} dtype"
    if name in FLOAT_PUZZLES:
        matches = np.allclose(got, expected, rtol=1e-6, atol=1e-5)
    else:
        matches = np.array_equal(got, expected)
    return None if matches else f"got {got.tolist()}, spec says {expected.tolist()}"


def run_case(puzzles: SimpleNamespace, backend: str, name: str, case: Case) -> str | None:
    """Run puzzle `name` from `puzzles` (a `bind(backend)` result) on `case`; None when it passes."""
    primitives = load(backend)
    try:
        args = [primitives.tensor(a) if isinstance(a, np.ndarray) else a for a in case.args]
        got = np.asarray(primitives.to_numpy(getattr(puzzles, name)(*args)))
    except Exception as error:  # a failing solution is a result to report, not a crash
        return f"raised {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return compare(name, got, case)


def edge_cases_for(name: str, backend: str) -> list[Case]:
    """The edge cases of `name` that `backend` can represent (minitorch has no zero-size tensors)."""
    return [case for case in EDGE_CASES[name] if load(backend).zero_size or not case.has_zero_size]


def cases_for(name: str, backend: str, examples: int, seed: int) -> list[Case]:
    """The edge cases of `name`, then `examples` random cases (the same on every backend)."""
    draw = RandomDraw(seed * 1000 + PUZZLE_NAMES.index(name))
    return edge_cases_for(name, backend) + [draw_case(name, draw) for _ in range(examples)]


@dataclass
class Tally:
    passed: int = 0
    total: int = 0
    failures: list[str] = field(default_factory=list)  # "input -> what went wrong"


def run_table(backends: list[str], examples: int = 10, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Tally | str]]:
    """{backend: {puzzle: Tally}}, or {backend: reason} for a backend that cannot be loaded.
    `progress` hears of each backend as it starts (loading a framework takes seconds)."""
    table: dict[str, dict[str, Tally | str]] = {}
    for i, backend in enumerate(backends):
        if progress:
            progress(f"[{i + 1}/{len(backends)}] {backend}: {len(PUZZLE_NAMES)} puzzles")
        try:
            puzzles = bind(backend)
        except ValueError as error:
            table[backend] = {name: str(error) for name in PUZZLE_NAMES}
            continue
        table[backend] = {}
        for name in PUZZLE_NAMES:
            tally = Tally()
            for case in cases_for(name, backend, examples, seed):
                problem = run_case(puzzles, backend, name, case)
                tally.total += 1
                if problem is None:
                    tally.passed += 1
                else:
                    tally.failures.append(f"{name}{case.describe()} -> {problem}")
            table[backend][name] = tally
    return table
