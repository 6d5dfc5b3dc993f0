"""Inputs for the puzzles: random draws over the original input domain, and named edge cases.

A `Case` holds the arguments in signature order (tensors as numpy int64/bool arrays, sizes as
Python ints) and the declared shape of the result. Random cases come from `draw_case(name, draw)`,
where `draw` is anything with the `Draw` methods: `RandomDraw` (numpy generator, used by
`python -m puzzles`) or the hypothesis-backed draw in tests/puzzles.

Domain, as in the original harness (srush/Tensor-Puzzles): sizes 1..5, values -5..5 and the
per-puzzle constraints. It is a superset of the original: sizes are drawn independently, so two sizes
may be equal (the original forces them distinct), and `sequence_mask` lengths reach the full row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MAX_SIZE = 5
MAX_VALUE = 5


@dataclass(frozen=True)
class Case:
    args: tuple  # numpy arrays (tensors) and Python ints (sizes), in signature order
    shape: tuple[int, ...]  # the declared shape of the result
    note: str = ""  # what an edge case is about

    @property
    def has_zero_size(self) -> bool:
        """True when an input or the result has no elements (minitorch cannot hold such tensors)."""
        return 0 in self.shape or any(isinstance(a, np.ndarray) and a.size == 0 for a in self.args)

    def describe(self) -> str:
        shown = ", ".join(str(a.tolist()) if isinstance(a, np.ndarray) else str(a) for a in self.args)
        return f"({shown})" + (f"  [{self.note}]" if self.note else "")


class Draw(Protocol):
    def integer(self, low: int, high: int) -> int: ...  # inclusive bounds
    def integers(self, shape: tuple[int, ...], low: int, high: int) -> np.ndarray: ...
    def booleans(self, length: int) -> np.ndarray: ...


class RandomDraw:
    """A `Draw` from a seeded numpy generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def integers(self, shape: tuple[int, ...], low: int, high: int) -> np.ndarray:
        return self.rng.integers(low, high + 1, size=shape).astype(np.int64)

    def booleans(self, length: int) -> np.ndarray:
        return self.rng.random(length) < 0.5


def _size(draw: Draw) -> int:
    return draw.integer(1, MAX_SIZE)


def _values(draw: Draw, *shape: int) -> np.ndarray:
    return draw.integers(shape, -MAX_VALUE, MAX_VALUE)


def _ones(draw: Draw) -> Case:
    i = _size(draw)
    return Case((i,), (i,))


def _sum(draw: Draw) -> Case:
    return Case((_values(draw, _size(draw)),), (1,))


def _outer(draw: Draw) -> Case:
    i, j = _size(draw), _size(draw)
    return Case((_values(draw, i), _values(draw, j)), (i, j))


def _diag(draw: Draw) -> Case:
    i = _size(draw)
    return Case((_values(draw, i, i),), (i,))


def _eye(draw: Draw) -> Case:
    j = _size(draw)
    return Case((j,), (j, j))


def _cumsum(draw: Draw) -> Case:
    i = _size(draw)
    return Case((_values(draw, i),), (i,))


def _vector_and_size(draw: Draw) -> Case:  # diff, roll, flip: (a: int[i], i)
    i = _size(draw)
    return Case((_values(draw, i), i), (i,))


def _vstack(draw: Draw) -> Case:
    i = _size(draw)
    return Case((_values(draw, i), _values(draw, i)), (2, i))


def _compress(draw: Draw) -> Case:
    i = _size(draw)
    return Case((draw.booleans(i), _values(draw, i), i), (i,))


def _pad_to(draw: Draw) -> Case:
    i, j = _size(draw), _size(draw)
    return Case((_values(draw, i), i, j), (j,))


def _sequence_mask(draw: Draw) -> Case:
    i, j = _size(draw), _size(draw)
    return Case((_values(draw, i, j), draw.integers((i,), 0, j)), (i, j))


def _bincount(draw: Draw) -> Case:
    i, j = _size(draw), _size(draw)
    return Case((draw.integers((i,), 0, j - 1), j), (j,))


def _scatter_add(draw: Draw) -> Case:
    i, j = _size(draw), _size(draw)
    return Case((_values(draw, i), draw.integers((i,), 0, j - 1), j), (j,))


def _flatten(draw: Draw) -> Case:
    i, j = _size(draw), _size(draw)
    return Case((_values(draw, i, j), i, j), (i * j,))


def _linspace(draw: Draw) -> Case:
    n = _size(draw)
    return Case((_values(draw, 1), _values(draw, 1), n), (n,))


def _heaviside(draw: Draw) -> Case:
    i = _size(draw)
    return Case((_values(draw, i), _values(draw, i)), (i,))


def _repeat(draw: Draw) -> Case:
    i, rows = _size(draw), _size(draw)
    return Case((_values(draw, i), np.array([rows])), (rows, i))


def _bucketize(draw: Draw) -> Case:
    i, j = _size(draw), _size(draw)
    # The original's constraint: a running sum of absolute values, so non-decreasing, often repeating.
    boundaries = np.cumsum(np.abs(_values(draw, j)))
    return Case((_values(draw, i), boundaries), (i,))


RANDOM_CASES: dict[str, Callable[[Draw], Case]] = {
    "ones": _ones, "sum": _sum, "outer": _outer, "diag": _diag, "eye": _eye, "triu": _eye,
    "cumsum": _cumsum, "diff": _vector_and_size, "vstack": _vstack, "roll": _vector_and_size,
    "flip": _vector_and_size, "compress": _compress, "pad_to": _pad_to, "sequence_mask": _sequence_mask,
    "bincount": _bincount, "scatter_add": _scatter_add, "flatten": _flatten, "linspace": _linspace,
    "heaviside": _heaviside, "repeat": _repeat, "bucketize": _bucketize,
}


def draw_case(name: str, draw: Draw) -> Case:
    return RANDOM_CASES[name](draw)


def _a(*values: int | bool) -> np.ndarray:
    return np.array(values)


def _m(*rows: tuple[int, ...]) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


_EMPTY = np.zeros(0, dtype=np.int64)

# Hand-picked edge cases: size 1, equal sizes, repeated and zero boundaries for
# bucketize, n = 1 for linspace, j < i for pad_to, empty results (nothing selected, and
# zero-length tensors where the puzzle still has a meaning).
EDGE_CASES: dict[str, list[Case]] = {
    "ones": [Case((1,), (1,), "size 1"), Case((0,), (0,), "empty")],
    "sum": [Case((_a(7),), (1,), "size 1"), Case((_a(5, -5),), (1,), "cancels to 0"),
            Case((_EMPTY,), (1,), "empty input sums to 0")],
    "outer": [Case((_a(2), _a(-3)), (1, 1), "size 1"), Case((_a(1, 2), _a(3, 4)), (2, 2), "equal sizes"),
              Case((_EMPTY, _a(1, 2)), (0, 2), "empty result")],
    "diag": [Case((_m((4,)),), (1,), "size 1")],
    "eye": [Case((1,), (1, 1), "size 1"), Case((0,), (0, 0), "empty")],
    "triu": [Case((1,), (1, 1), "size 1"), Case((0,), (0, 0), "empty")],
    "cumsum": [Case((_a(-4),), (1,), "size 1"), Case((_EMPTY,), (0,), "empty")],
    "diff": [Case((_a(3), 1), (1,), "size 1")],
    "vstack": [Case((_a(1), _a(2)), (2, 1), "size 1"), Case((_EMPTY, _EMPTY), (2, 0), "empty")],
    "roll": [Case((_a(3), 1), (1,), "size 1")],
    "flip": [Case((_a(3), 1), (1,), "size 1"), Case((_EMPTY, 0), (0,), "empty")],
    "compress": [Case((_a(False, False, False), _a(1, 2, 3), 3), (3,), "nothing selected"),
                 Case((_a(True, True, True), _a(1, 2, 3), 3), (3,), "everything selected"),
                 Case((_a(False), _a(5), 1), (1,), "size 1, nothing selected"),
                 Case((_EMPTY > 0, _EMPTY, 0), (0,), "empty")],
    "pad_to": [Case((_a(1, 2, 3), 3, 1), (1,), "j < i truncates"), Case((_a(1, 2), 2, 2), (2,), "i == j"),
               Case((_a(4), 1, 5), (5,), "size 1 padded"), Case((_a(1, 2), 2, 0), (0,), "j = 0: empty"),
               Case((_EMPTY, 0, 3), (3,), "empty input padded")],
    "sequence_mask": [Case((_m((1, 2), (3, 4)), _a(0, 0)), (2, 2), "all lengths 0: empty rows"),
                      Case((_m((1, 2), (3, 4)), _a(2, 2)), (2, 2), "full rows"),
                      Case((_m((5,)), _a(0)), (1, 1), "size 1, length 0")],
    "bincount": [Case((_a(0, 1, 2), 3), (3,), "i == j"), Case((_a(0, 0, 0), 1), (1,), "j = 1"),
                 Case((_EMPTY, 3), (3,), "empty input: all counts 0")],
    "scatter_add": [Case((_a(1, 2, 3), _a(0, 0, 0), 1), (1,), "one bin"),
                    Case((_a(-1, 1), _a(1, 1), 2), (2,), "i == j, sum cancels"),
                    Case((_EMPTY, _EMPTY, 2), (2,), "empty input: all sums 0")],
    "flatten": [Case((_m((7,)), 1, 1), (1,), "size 1"), Case((_m((1, 2), (3, 4)), 2, 2), (4,), "i == j")],
    "linspace": [Case((_a(3), _a(-2), 1), (1,), "n = 1"), Case((_a(2), _a(2), 4), (4,), "i == j"),
                 Case((_a(4), _a(-4), 3), (3,), "decreasing"), Case((_a(1), _a(2), 0), (0,), "n = 0: empty")],
    "heaviside": [Case((_a(0, 0), _a(-3, 4)), (2,), "all of a zero"), Case((_a(-1), _a(9)), (1,), "size 1")],
    "repeat": [Case((_a(1, 2), _a(1)), (1, 2), "one row"), Case((_a(1, 2), _a(2)), (2, 2), "rows == i"),
               Case((_a(1, 2), _a(0)), (0, 2), "zero rows: empty")],
    "bucketize": [Case((_a(-1, 0, 1), _a(0, 0, 0)), (3,), "all-zero boundaries"),
                  Case((_a(-1, 0, 2, 3, 5), _a(0, 0, 3)), (5,), "repeated boundaries"),
                  Case((_a(4), _a(4)), (1,), "size 1, v on the boundary"),
                  Case((_a(1, 2), _a(1, 2)), (2,), "equal sizes"),
                  Case((_EMPTY, _a(1)), (0,), "empty v"), Case((_a(3, -3), _EMPTY), (2,), "no boundaries")],
}
