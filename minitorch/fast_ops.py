"""Module 3: the same backend interface as ``SimpleOps``, compiled by numba and run in parallel.

Three ideas make it fast:

1. ``njit`` compiles each kernel (and the ``operators`` function inside it) to machine code.
2. ``prange`` splits the loop over output positions across CPU threads. Each iteration computes
   its storage positions arithmetically from the ordinal, so threads share no index buffers.
3. A fast path: when input and output have the same shape and strides, element k of the output
   comes from element k of each input, so no index arithmetic is needed at all.

Matrix multiply packs each batch's operands into contiguous row-major blocks and runs the
i-k-j loop order, whose inner loop walks memory with stride 1 and so vectorises.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

# numba's OpenMP thread pool spins while idle by default. On a shared machine those spinning
# threads steal the cores the work needs (we measured kernels 10-40x slower under load), so idle
# threads sleep instead unless the user chose otherwise. Must be set before the pool starts.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
from numba import njit as _njit  # noqa: E402
from numba import prange  # noqa: E402

from . import tensor_data  # noqa: E402
from .tensor_data import Shape, Storage, Strides, shape_broadcast  # noqa: E402
from .tensor_ops import MapProto, TensorOps, matmul_shapes, reduced_shape  # noqa: E402

if TYPE_CHECKING:
    from .tensor import Tensor


def njit(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """numba's njit with inlining (the course compiles every operator this way)."""
    return _njit(inline="always", **kwargs)(fn)


# Compiled copies of the index helpers, for kernels written against the course's helper API.
to_index = njit(tensor_data.to_index)
index_to_position = njit(tensor_data.index_to_position)
broadcast_index = njit(tensor_data.broadcast_index)


# Below this many output elements a kernel runs on one thread: waking the thread pool costs more
# than it saves (tens of microseconds at best; far more on a busy machine).
PARALLEL_MIN_SIZE = 50_000


def serial_twin(kernel: Any) -> Any:
    """The same kernel compiled without threads (``prange`` then behaves like ``range``)."""
    return _njit()(kernel.py_func)


class FastOps(TensorOps):
    """numba-parallel map, zip, reduce and batched matrix multiply over strided storage."""

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        parallel = tensor_map(njit(fn))
        serial = serial_twin(parallel)

        def apply(a: Tensor, out: Tensor | None = None) -> Tensor:
            if out is None:
                out = a.zeros(a.shape)
            kernel = parallel if out.size >= PARALLEL_MIN_SIZE else serial
            kernel(*out.tuple(), *a.tuple())
            return out

        return apply

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        parallel = tensor_zip(njit(fn))
        serial = serial_twin(parallel)

        def apply(a: Tensor, b: Tensor) -> Tensor:
            out = a.zeros(shape_broadcast(a.shape, b.shape))
            kernel = parallel if out.size >= PARALLEL_MIN_SIZE else serial
            kernel(*out.tuple(), *a.tuple(), *b.tuple())
            return out

        return apply

    @staticmethod
    def reduce(fn: Callable[[float, float], float], start: float = 0.0) -> Callable[[Tensor, int], Tensor]:
        parallel = tensor_reduce(njit(fn))
        serial = serial_twin(parallel)

        def apply(a: Tensor, dim: int) -> Tensor:
            out = a.zeros(reduced_shape(a.shape, dim))
            out._tensor._storage[:] = start
            kernel = parallel if a.size >= PARALLEL_MIN_SIZE else serial
            kernel(*out.tuple(), *a.tuple(), dim)
            return out

        return apply

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        """Batched ``a @ b``; 2-D inputs are treated as a batch of one and come back 2-D."""
        out_shape, both_2d = matmul_shapes(a, b)
        a3 = a.contiguous().view(1, *a.shape) if a.dims == 2 else a
        b3 = b.contiguous().view(1, *b.shape) if b.dims == 2 else b
        if a3.dims != 3 or b3.dims != 3:
            # Flatten extra leading batch dims: broadcast both to the full batch, then view.
            batch = out_shape[:-2]
            a3 = _broadcast_batch(a3, batch).view(int(np.prod(batch)), *a.shape[-2:])
            b3 = _broadcast_batch(b3, batch).view(int(np.prod(batch)), *b.shape[-2:])
        out3_shape = (max(a3.shape[0], b3.shape[0]), a3.shape[1], b3.shape[2])
        out = a.zeros(out3_shape)
        work = out.size * a3.shape[2]  # multiply-adds
        kernel = tensor_matrix_multiply if work >= PARALLEL_MIN_SIZE else serial_matrix_multiply
        kernel(*out.tuple(), *a3.tuple(), *b3.tuple())
        if both_2d:
            return out.view(out3_shape[1], out3_shape[2])
        return out.view(*out_shape) if out.shape != out_shape else out


def _broadcast_batch(t: Tensor, batch: tuple[int, ...]) -> Tensor:
    """A contiguous copy of ``t`` with its leading dims broadcast to ``batch``."""
    full = batch + t.shape[-2:]
    if t.shape == full:
        return t.contiguous()
    out = t.zeros(full)
    t.backend.id_map(t, out)
    return out


# ## Kernels


def tensor_map(fn: Callable[[float], float]) -> Any:
    """Parallel kernel: ``out = fn(in)`` with ``in`` broadcast to ``out``'s shape."""

    def _map(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        in_storage: Storage,
        in_shape: Shape,
        in_strides: Strides,
    ) -> None:
        size = 1
        for s in out_shape:
            size *= s
        if (
            len(out_shape) == len(in_shape)
            and np.all(out_shape == in_shape)
            and np.all(out_strides == in_strides)
            and len(out) == size
            and len(in_storage) == size
        ):
            for i in prange(size):
                out[i] = fn(in_storage[i])
            return
        # One parallel task per row of the last dimension: index arithmetic (divisions) once per
        # row, then a plain strided walk along it.
        dims = len(out_shape)
        offset = dims - len(in_shape)
        last = dims - 1
        row_length = out_shape[last]
        out_step = out_strides[last]
        in_step = in_strides[last - offset] if in_shape[last - offset] > 1 else 0
        for row in prange(size // row_length):
            out_pos = 0
            in_pos = 0
            block = 1  # product of the sizes of the leading dims to the right of d
            for d in range(last - 1, -1, -1):
                idx = (row // block) % out_shape[d]
                block *= out_shape[d]
                out_pos += idx * out_strides[d]
                if d >= offset and in_shape[d - offset] > 1:
                    in_pos += idx * in_strides[d - offset]
            for j in range(row_length):
                out[out_pos + j * out_step] = fn(in_storage[in_pos + j * in_step])

    return _njit(parallel=True)(_map)


def tensor_zip(fn: Callable[[float, float], float]) -> Any:
    """Parallel kernel: ``out = fn(a, b)`` with ``a`` and ``b`` broadcast to ``out``'s shape."""

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
        size = 1
        for s in out_shape:
            size *= s
        if (
            len(out_shape) == len(a_shape)
            and len(out_shape) == len(b_shape)
            and np.all(out_shape == a_shape)
            and np.all(out_shape == b_shape)
            and np.all(out_strides == a_strides)
            and np.all(out_strides == b_strides)
            and len(out) == size
            and len(a_storage) == size
            and len(b_storage) == size
        ):
            for i in prange(size):
                out[i] = fn(a_storage[i], b_storage[i])
            return
        dims = len(out_shape)
        a_offset = dims - len(a_shape)
        b_offset = dims - len(b_shape)
        last = dims - 1
        row_length = out_shape[last]
        out_step = out_strides[last]
        a_step = a_strides[last - a_offset] if a_shape[last - a_offset] > 1 else 0
        b_step = b_strides[last - b_offset] if b_shape[last - b_offset] > 1 else 0
        for row in prange(size // row_length):
            out_pos = 0
            a_pos = 0
            b_pos = 0
            block = 1
            for d in range(last - 1, -1, -1):
                idx = (row // block) % out_shape[d]
                block *= out_shape[d]
                out_pos += idx * out_strides[d]
                if d >= a_offset and a_shape[d - a_offset] > 1:
                    a_pos += idx * a_strides[d - a_offset]
                if d >= b_offset and b_shape[d - b_offset] > 1:
                    b_pos += idx * b_strides[d - b_offset]
            for j in range(row_length):
                out[out_pos + j * out_step] = fn(a_storage[a_pos + j * a_step], b_storage[b_pos + j * b_step])

    return _njit(parallel=True)(_zip)


def tensor_reduce(fn: Callable[[float, float], float]) -> Any:
    """Parallel kernel: fold dimension ``reduce_dim`` of ``a`` with ``fn``, starting from ``out``."""

    def _reduce(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        reduce_dim: int,
    ) -> None:
        size = 1
        for s in out_shape:
            size *= s
        dims = len(out_shape)
        reduce_size = a_shape[reduce_dim]
        reduce_stride = a_strides[reduce_dim]
        for i in prange(size):
            block = 1  # product of the sizes of the dims to the right of d
            out_pos = 0
            a_pos = 0
            for d in range(dims - 1, -1, -1):
                idx = (i // block) % out_shape[d]
                block *= out_shape[d]
                out_pos += idx * out_strides[d]
                a_pos += idx * a_strides[d]
            total = out[out_pos]
            for j in range(reduce_size):
                total = fn(total, a_storage[a_pos + j * reduce_stride])
            out[out_pos] = total

    return _njit(parallel=True)(_reduce)


def _tensor_matrix_multiply(
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
    """Batched matrix multiply over 3-D layouts; a batch dim of size 1 broadcasts (stride 0).

    out[n, i, j] = sum_k a[n, i, k] * b[n, k, j]. Each batch's operands are first packed into
    contiguous blocks so the inner loop (over j, stride 1 in both ``b`` and ``out``) vectorises;
    rows of the output are shared out between threads.
    """
    a_batch_stride = a_strides[0] if a_shape[0] > 1 else 0
    b_batch_stride = b_strides[0] if b_shape[0] > 1 else 0
    rows = out_shape[1]
    cols = out_shape[2]
    inner = a_shape[2]
    for n in range(out_shape[0]):
        a_block = np.empty((rows, inner))
        b_block = np.empty((inner, cols))
        for i in prange(rows):
            for k in range(inner):
                a_block[i, k] = a_storage[n * a_batch_stride + i * a_strides[1] + k * a_strides[2]]
        for k in prange(inner):
            for j in range(cols):
                b_block[k, j] = b_storage[n * b_batch_stride + k * b_strides[1] + j * b_strides[2]]
        for i in prange(rows):
            row = np.zeros(cols)
            for k in range(inner):
                a_ik = a_block[i, k]
                for j in range(cols):
                    row[j] += a_ik * b_block[k, j]
            for j in range(cols):
                out[n * out_strides[0] + i * out_strides[1] + j * out_strides[2]] = row[j]


tensor_matrix_multiply = _njit(parallel=True, fastmath=True)(_tensor_matrix_multiply)
serial_matrix_multiply = _njit(fastmath=True)(_tensor_matrix_multiply)
