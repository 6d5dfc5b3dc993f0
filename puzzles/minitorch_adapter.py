"""Puzzles on minitorch (this project's MiniTorch-course tensor library): the adapter that fills its gaps.

minitorch's Tensor stores float64 values and offers +, -, *, /, 2-D @, <, ==, broadcasting and
views. It has no integer or boolean dtype, no //, %, <=, >=, !=, &, |, ~, and no slicing or
integer-array indexing (its `t[i, j]` reads one float). `MinitorchArray` wraps a minitorch Tensor
with a `kind` ("int", "bool" or "float") and builds each missing piece from minitorch's own parts:
* integers and booleans are held exactly as floats (booleans as 0.0/1.0) and turned back into
  int64/bool only by `to_numpy`;
* <=, >=, != are 1 - (the opposite comparison); & is *, | is a + b - a*b, ~ is 1 - q;
* // and % run through minitorch's element-wise zip kernel with Python's floor rules;
* @ on vectors is minitorch's 2-D matmul on 1-row / 1-column views;
* a[:, None] is a view; integer-array indexing gathers one element at a time through minitorch's
  strided `t[index]` read (minitorch has no gather).
minitorch cannot hold zero-size tensors, so puzzles with empty results cannot run on it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from minitorch import Tensor

_RANK = {"bool": 0, "int": 1, "float": 2}


def make_tensor(values: Any) -> Tensor:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"minitorch has no zero-size tensors (shape {array.shape})")
    return Tensor.make(array.reshape(-1).copy(), array.shape)


def _kind_of(x: Any) -> str:
    if isinstance(x, MinitorchArray):
        return x.kind
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int | np.integer):
        return "int"
    if isinstance(x, float | np.floating):
        return "float"
    raise TypeError(f"cannot combine a MinitorchArray with {type(x).__name__}")


def _tensor_of(x: Any) -> Tensor:
    return x.tensor if isinstance(x, MinitorchArray) else make_tensor([float(x)])


def _number_kind(a: Any, b: Any, what: str) -> str:
    kinds = (_kind_of(a), _kind_of(b))
    if kinds == ("bool", "bool"):
        raise ValueError(f"{what} of two booleans: turn a mask into 0/1 with where(mask, 1, 0) first")
    return max(kinds, key=_RANK.__getitem__).replace("bool", "int")


def _arithmetic(op: Callable[[Tensor, Tensor], Tensor], what: str):
    def apply(a: Any, b: Any) -> MinitorchArray:
        return MinitorchArray(op(_tensor_of(a), _tensor_of(b)), _number_kind(a, b, what))
    return apply


def _floor_kernel(fn: Callable[[float, float], float], what: str):
    def apply(a: Any, b: Any) -> MinitorchArray:
        left, right = _tensor_of(a), _tensor_of(b)
        return MinitorchArray(left.backend.ops.zip(fn)(left, right), _number_kind(a, b, what))
    return apply


def _comparison(op: Callable[[Tensor, Tensor], Tensor]):
    def apply(a: Any, b: Any) -> MinitorchArray:
        return MinitorchArray(op(_tensor_of(a), _tensor_of(b)), "bool")
    return apply


def _logical(op: Callable[[Tensor, Tensor], Tensor], what: str):
    def apply(a: Any, b: Any) -> MinitorchArray:
        if _kind_of(a) != "bool" or _kind_of(b) != "bool":
            raise ValueError(f"{what} needs two boolean masks")
        return MinitorchArray(op(_tensor_of(a), _tensor_of(b)), "bool")
    return apply


def _matmul(a: Any, b: Any) -> MinitorchArray:
    if _kind_of(a) == "bool" or _kind_of(b) == "bool":
        raise ValueError("@ needs numbers, not booleans: turn the mask into 0/1 with where(mask, 1, 0)")
    left, right = _tensor_of(a), _tensor_of(b)
    if left.dims not in (1, 2) or right.dims not in (1, 2):
        raise ValueError(f"@ on minitorch supports 1-D and 2-D tensors, got {left.shape} @ {right.shape}")
    rows = left.contiguous().view(1, left.shape[0]) if left.dims == 1 else left
    cols = right.contiguous().view(right.shape[0], 1) if right.dims == 1 else right
    product = rows @ cols  # (r, c)
    shape = product.shape[1 if left.dims == 1 else 0: 1 if right.dims == 1 else 2]
    # vector @ vector is 0-d, as in numpy; minitorch's view() cannot make a 0-d tensor
    result = product.contiguous().view(*shape) if shape else make_tensor(product.item())
    return MinitorchArray(result, _number_kind(a, b, "@"))


class MinitorchArray:
    """A minitorch Tensor plus the kind of number it holds; see the module docstring."""

    __hash__ = None  # == is element-wise

    def __init__(self, tensor: Tensor, kind: str) -> None:
        self.tensor = tensor
        self.kind = kind

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def to_numpy(self) -> np.ndarray:
        values = self.tensor.to_numpy()
        if self.kind == "int":
            return np.rint(values).astype(np.int64)
        return values.astype(np.bool_) if self.kind == "bool" else values

    def __getitem__(self, key: Any) -> MinitorchArray:
        key = key if isinstance(key, tuple) else (key,)
        if all(k is None or isinstance(k, slice) and k == slice(None) for k in key):
            return self._insert_axes(key)
        if len(key) == len(self.shape) and all(isinstance(k, int | MinitorchArray) for k in key):
            return self._gather(key)
        raise ValueError("the minitorch adapter supports a[:, None]-style views and integer-array "
                         "indexing with one index per dimension")

    def _insert_axes(self, key: tuple) -> MinitorchArray:
        sizes = iter(self.shape)
        shape = [1 if k is None else next(sizes) for k in key] + list(sizes)
        return MinitorchArray(self.tensor.contiguous().view(*shape), self.kind)

    def _gather(self, key: tuple) -> MinitorchArray:
        indices = []
        for k, size in zip(key, self.shape):
            if isinstance(k, MinitorchArray) and k.kind != "int":
                raise ValueError(f"an index array must hold integers, got {k.kind}")
            index = k.to_numpy() if isinstance(k, MinitorchArray) else np.array(k)
            if np.any((index < -size) | (index >= size)):
                raise IndexError(f"index out of range for a dimension of size {size}")
            indices.append(index % size)  # negative indices count from the end, as in numpy
        indices = np.broadcast_arrays(*indices)
        shape = indices[0].shape
        values = [self.tensor[tuple(int(i[at]) for i in indices)] for at in np.ndindex(shape)]
        return MinitorchArray(make_tensor(np.array(values).reshape(shape)), self.kind)

    def __neg__(self) -> MinitorchArray:
        return _arithmetic(lambda a, b: -a, "-")(self, 0)

    def __invert__(self) -> MinitorchArray:
        return _logical(lambda a, b: 1.0 - a, "~")(self, True)

    def __bool__(self) -> bool:
        if math.prod(self.shape) != 1:
            raise ValueError("the truth value of a tensor with several elements is ambiguous")
        return bool(self.tensor.item())

    def __repr__(self) -> str:
        return f"MinitorchArray({self.to_numpy()!r})"


_add = _arithmetic(operator.add, "+")
_sub = _arithmetic(operator.sub, "-")
_mul = _arithmetic(operator.mul, "*")
_floordiv = _floor_kernel(lambda a, b: float(a // b), "//")
_mod = _floor_kernel(lambda a, b: float(a % b), "%")


def _truediv(a: Any, b: Any) -> MinitorchArray:
    return MinitorchArray(_tensor_of(a) / _tensor_of(b), "float")


_BINARY = {"add": _add, "sub": _sub, "mul": _mul, "truediv": _truediv, "floordiv": _floordiv,
           "mod": _mod, "matmul": _matmul,
           "and": _logical(operator.mul, "&"), "or": _logical(lambda a, b: a + b - a * b, "|")}
for _name, _op in _BINARY.items():
    setattr(MinitorchArray, f"__{_name}__", lambda self, other, op=_op: op(self, other))
    setattr(MinitorchArray, f"__r{_name}__", lambda self, other, op=_op: op(other, self))

_COMPARISONS = {"lt": lambda a, b: a < b, "gt": lambda a, b: b < a, "eq": lambda a, b: a == b,
                "le": lambda a, b: 1.0 - (b < a), "ge": lambda a, b: 1.0 - (a < b),
                "ne": lambda a, b: 1.0 - (a == b)}
for _name, _op in _COMPARISONS.items():
    _compare = _comparison(_op)
    setattr(MinitorchArray, f"__{_name}__", lambda self, other, op=_compare: op(self, other))


def _where(q: MinitorchArray, a: Any, b: Any) -> MinitorchArray:
    """Upstream's arithmetic `where`: q * a + (1 - q) * b, in minitorch ops."""
    chosen = _tensor_of(q) * _tensor_of(a) + (1.0 - _tensor_of(q)) * _tensor_of(b)
    kind = max(_kind_of(a), _kind_of(b), key=_RANK.__getitem__)
    return MinitorchArray(chosen, kind)


def _from_numpy(array: np.ndarray) -> MinitorchArray:
    return MinitorchArray(make_tensor(array), "bool" if array.dtype == np.bool_ else "int")


def _to_numpy(x: Any) -> np.ndarray:
    if not isinstance(x, MinitorchArray):
        raise TypeError(f"expected a MinitorchArray, got {type(x).__name__}")
    return x.to_numpy()


def make_backend_parts() -> tuple:
    """(arange, where, is_bool, tensor, to_numpy) for puzzles.backends."""
    return (lambda n: MinitorchArray(make_tensor(np.arange(n)), "int"), _where,
            lambda q: isinstance(q, MinitorchArray) and q.kind == "bool", _from_numpy, _to_numpy)
