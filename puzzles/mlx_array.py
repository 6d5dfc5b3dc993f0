"""A thin wrapper that lets the puzzles run on mlx, whose `@` accepts floating-point arrays only.

Most puzzles reduce with an integer matmul (a row of values times a 0/1 matrix). The puzzle code
must not cast, so the mlx backend hands the solutions `MlxArray`s instead of `mx.array`s. Every
operator, index and `.shape` passes straight through to mlx; only `@` on two integer arrays is
computed differently: as a broadcast multiply and a sum over the shared axis, which is exact for
integers (a float32 round trip would silently lose digits above 2**24).
"""

from __future__ import annotations

import operator
from typing import Any

import mlx.core as mx


def unwrap(x: Any) -> Any:
    """The mx.array inside `x` (also inside an index tuple); anything else unchanged."""
    if isinstance(x, MlxArray):
        return x.array
    if isinstance(x, tuple):
        return tuple(unwrap(item) for item in x)
    return x


def integer_matmul(a: mx.array, b: mx.array) -> mx.array:
    """`a @ b` for 1-D or 2-D integer arrays, with numpy's rules for 1-D operands."""
    if a.ndim not in (1, 2) or b.ndim not in (1, 2):
        raise ValueError(f"@ on mlx integers supports 1-D and 2-D arrays, got {a.shape} @ {b.shape}")
    rows = a[None, :] if a.ndim == 1 else a  # (r, n)
    cols = b[:, None] if b.ndim == 1 else b  # (n, c)
    if rows.shape[1] != cols.shape[0]:
        raise ValueError(f"@ shapes do not match: {a.shape} @ {b.shape}")
    product = (rows[:, :, None] * cols[None, :, :]).sum(axis=1)  # (r, c)
    if a.ndim == 1:
        product = product[0]
    if b.ndim == 1:
        product = product[..., 0]
    return product


def matmul(a: mx.array, b: mx.array) -> mx.array:
    if a.dtype == mx.bool_ or b.dtype == mx.bool_:
        # numpy, jax and tinygrad return a *boolean* (or-of-ands) for bool @ bool, not a count.
        raise ValueError("@ needs numbers, not booleans: turn the mask into 0/1 with where(mask, 1, 0)")
    if mx.issubdtype(a.dtype, mx.inexact) or mx.issubdtype(b.dtype, mx.inexact):
        return a @ b
    return integer_matmul(a, b)


class MlxArray:
    """An mx.array for the puzzles; see the module docstring for the one difference."""

    __slots__ = ("array",)
    __hash__ = None  # == is element-wise, as in mlx

    def __init__(self, array: mx.array) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> mx.Dtype:
        return self.array.dtype

    def __getitem__(self, index: Any) -> MlxArray:
        return MlxArray(self.array[unwrap(index)])

    def __matmul__(self, other: Any) -> MlxArray:
        return MlxArray(matmul(self.array, unwrap(other)))

    def __rmatmul__(self, other: Any) -> MlxArray:
        return MlxArray(matmul(unwrap(other), self.array))

    def __neg__(self) -> MlxArray:
        return MlxArray(-self.array)

    def __pos__(self) -> MlxArray:
        return self

    def __invert__(self) -> MlxArray:
        return MlxArray(~self.array)

    def __bool__(self) -> bool:
        return bool(self.array)

    def __repr__(self) -> str:
        return f"MlxArray({self.array})"


def _forward(op):
    return lambda self, other: MlxArray(op(self.array, unwrap(other)))


def _reflected(op):
    return lambda self, other: MlxArray(op(unwrap(other), self.array))


# Binary operators pass through unchanged; Python calls the reflected form for `1 - x`.
for _name, _op in {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
                   "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
                   "pow": operator.pow, "and": operator.and_, "or": operator.or_}.items():
    setattr(MlxArray, f"__{_name}__", _forward(_op))
    setattr(MlxArray, f"__r{_name}__", _reflected(_op))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(MlxArray, f"__{_name}__", _forward(getattr(operator, _name)))
