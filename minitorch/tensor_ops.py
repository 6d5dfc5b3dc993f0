"""Module 2: the backend interface, and a pure-Python backend that implements it.

Every tensor operation reduces to four primitives over strided storage:

* ``map(fn)``: apply a one-argument function to each element (broadcasting into ``out``);
* ``zip(fn)``: combine two tensors element by element after broadcasting them;
* ``reduce(fn, start)``: fold one dimension down to size 1;
* ``matrix_multiply``: batched matrix product.

``TensorBackend`` turns an ops class into the named kernels tensors call (``add_zip``,
``exp_map``, ...). ``SimpleOps`` is the readable reference; ``FastOps`` and ``CudaOps`` implement
the same interface faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from . import operators
from .tensor_data import (
    IndexingError,
    Shape,
    Storage,
    Strides,
    broadcast_index,
    index_to_position,
    shape_broadcast,
    to_index,
)

if TYPE_CHECKING:
    from .tensor import Tensor


class MapProto(Protocol):
    def __call__(self, x: Tensor, out: Tensor | None = ..., /) -> Tensor: ...


class TensorOps:
    """The interface a backend implements (see the module docstring)."""

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        raise NotImplementedError

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        raise NotImplementedError

    @staticmethod
    def reduce(fn: Callable[[float, float], float], start: float = 0.0) -> Callable[[Tensor, int], Tensor]:
        raise NotImplementedError

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError("this backend has no matrix multiply")

    cuda = False


class TensorBackend:
    """The named kernels one ops class provides, built once from the ``operators`` functions."""

    def __init__(self, ops: type[TensorOps]) -> None:
        self.ops = ops
        self.neg_map = ops.map(operators.neg)
        self.sigmoid_map = ops.map(operators.sigmoid)
        self.relu_map = ops.map(operators.relu)
        self.log_map = ops.map(operators.log)
        self.exp_map = ops.map(operators.exp)
        self.id_map = ops.map(operators.id)
        self.inv_map = ops.map(operators.inv)

        self.add_zip = ops.zip(operators.add)
        self.mul_zip = ops.zip(operators.mul)
        self.lt_zip = ops.zip(operators.lt)
        self.eq_zip = ops.zip(operators.eq)
        self.is_close_zip = ops.zip(operators.is_close)
        self.relu_back_zip = ops.zip(operators.relu_back)
        self.log_back_zip = ops.zip(operators.log_back)
        self.inv_back_zip = ops.zip(operators.inv_back)
        self.sigmoid_back_zip = ops.zip(operators.sigmoid_back)

        self.add_reduce = ops.reduce(operators.add, 0.0)
        self.mul_reduce = ops.reduce(operators.mul, 1.0)
        self.max_reduce = ops.reduce(operators.max, -math.inf)
        self.matrix_multiply = ops.matrix_multiply
        self.cuda = ops.cuda

    def __repr__(self) -> str:
        return f"TensorBackend({self.ops.__name__})"


def reduced_shape(shape: tuple[int, ...], dim: int) -> tuple[int, ...]:
    """``shape`` with dimension ``dim`` set to 1 (reductions keep the dimension)."""
    if not 0 <= dim < len(shape):
        raise IndexingError(f"cannot reduce dim {dim} of a tensor of shape {shape}")
    return tuple(1 if i == dim else s for i, s in enumerate(shape))


def matmul_shapes(a: Tensor, b: Tensor) -> tuple[tuple[int, ...], bool]:
    """Output shape of a batched ``a @ b`` (both inputs at least 2-D) and whether both were 2-D."""
    if a.dims < 2 or b.dims < 2:
        raise IndexingError(f"matrix multiply needs 2-D or batched inputs, got {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise IndexingError(f"cannot multiply shapes {a.shape} and {b.shape}: inner sizes differ")
    batch = shape_broadcast(a.shape[:-2], b.shape[:-2])
    return batch + (a.shape[-2], b.shape[-1]), a.dims == 2 and b.dims == 2


def as_batched(t: Tensor) -> Tensor:
    """A 2-D tensor viewed as a batch of one (3-D), so kernels only handle the batched case."""
    if t.dims == 2:
        return t.contiguous().view(1, t.shape[0], t.shape[1])
    return t


class SimpleOps(TensorOps):
    """Pure-Python loops over strided storage: slow, but each step is plain to read."""

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        kernel = tensor_map(fn)

        def apply(a: Tensor, out: Tensor | None = None) -> Tensor:
            if out is None:
                out = a.zeros(a.shape)
            kernel(*out.tuple(), *a.tuple())
            return out

        return apply

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        kernel = tensor_zip(fn)

        def apply(a: Tensor, b: Tensor) -> Tensor:
            out = a.zeros(shape_broadcast(a.shape, b.shape))
            kernel(*out.tuple(), *a.tuple(), *b.tuple())
            return out

        return apply

    @staticmethod
    def reduce(fn: Callable[[float, float], float], start: float = 0.0) -> Callable[[Tensor, int], Tensor]:
        kernel = tensor_reduce(fn)

        def apply(a: Tensor, dim: int) -> Tensor:
            out = a.zeros(reduced_shape(a.shape, dim))
            out._tensor._storage[:] = start
            kernel(*out.tuple(), *a.tuple(), dim)
            return out

        return apply

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        """Batched product by the textbook triple loop, over any strides."""
        out_shape, both_2d = matmul_shapes(a, b)
        a3, b3 = as_batched(a), as_batched(b)
        out = a.zeros(out_shape if not both_2d else (1,) + out_shape)
        out_index = np.zeros(3, dtype=np.int32)
        a_index = np.zeros(3, dtype=np.int32)
        b_index = np.zeros(3, dtype=np.int32)
        a_storage, a_shape, a_strides = a3.tuple()
        b_storage, b_shape, b_strides = b3.tuple()
        o_storage, o_shape, o_strides = out.tuple()
        inner = a3.shape[-1]
        for ordinal in range(out.size):
            to_index(ordinal, o_shape, out_index)
            total = 0.0
            for k in range(inner):
                a_index[:] = (out_index[0] if a_shape[0] > 1 else 0, out_index[1], k)
                b_index[:] = (out_index[0] if b_shape[0] > 1 else 0, k, out_index[2])
                total += (
                    a_storage[index_to_position(a_index, a_strides)]
                    * b_storage[index_to_position(b_index, b_strides)]
                )
            o_storage[index_to_position(out_index, o_strides)] = total
        return out.view(*out_shape) if both_2d else out


# Low-level kernels. Each fills ``out`` in place from raw storage, shape and strides, so the same
# loops work for any layout: contiguous, permuted, or broadcast.


def tensor_map(fn: Callable[[float], float]) -> Callable[..., None]:
    """Kernel applying ``fn`` to each element of ``in`` broadcast to ``out``'s shape."""

    def _map(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        in_storage: Storage,
        in_shape: Shape,
        in_strides: Strides,
    ) -> None:
        out_index = np.zeros(len(out_shape), dtype=np.int32)
        in_index = np.zeros(len(in_shape), dtype=np.int32)
        for ordinal in range(int(np.prod(out_shape))):
            to_index(ordinal, out_shape, out_index)
            broadcast_index(out_index, out_shape, in_shape, in_index)
            value = in_storage[index_to_position(in_index, in_strides)]
            out[index_to_position(out_index, out_strides)] = fn(value)

    return _map


def tensor_zip(fn: Callable[[float, float], float]) -> Callable[..., None]:
    """Kernel combining ``a`` and ``b``, both broadcast to ``out``'s shape, with ``fn``."""

    def _zip(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        b_storage: Storage,
        b_shape: Shape,
        b_strides: Strides,
    ) -> None:
        out_index = np.zeros(len(out_shape), dtype=np.int32)
        a_index = np.zeros(len(a_shape), dtype=np.int32)
        b_index = np.zeros(len(b_shape), dtype=np.int32)
        for ordinal in range(int(np.prod(out_shape))):
            to_index(ordinal, out_shape, out_index)
            broadcast_index(out_index, out_shape, a_shape, a_index)
            broadcast_index(out_index, out_shape, b_shape, b_index)
            a_value = a_storage[index_to_position(a_index, a_strides)]
            b_value = b_storage[index_to_position(b_index, b_strides)]
            out[index_to_position(out_index, out_strides)] = fn(a_value, b_value)

    return _zip


def tensor_reduce(fn: Callable[[float, float], float]) -> Callable[..., None]:
    """Kernel folding dimension ``reduce_dim`` of ``a`` with ``fn``, starting from ``out``'s values."""

    def _reduce(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        reduce_dim: int,
    ) -> None:
        index = np.zeros(len(out_shape), dtype=np.int32)
        for ordinal in range(int(np.prod(out_shape))):
            to_index(ordinal, out_shape, index)
            out_position = index_to_position(index, out_strides)
            total = out[out_position]
            for j in range(a_shape[reduce_dim]):
                index[reduce_dim] = j
                total = fn(total, a_storage[index_to_position(index, a_strides)])
            out[out_position] = total

    return _reduce


SimpleBackend = TensorBackend(SimpleOps)
