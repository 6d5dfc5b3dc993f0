"""Module 3: the backend interface as numba.cuda kernels, plus the course's practice kernels.

One GPU thread computes one output element for map and zip; reduce gives each output cell a
block of threads that fold strided slices of the reduced dimension and then combine their partial
results in shared memory; matrix multiply loads 32x32 tiles of both operands into shared memory
so each input value is read from global memory once per tile instead of once per product.

Importing this module never needs a GPU (kernels compile on first launch). Tests run the kernels
on the CPU with numba's simulator (environment variable ``NUMBA_ENABLE_CUDASIM=1`` set before
numba is imported).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numba
import numba.cuda
from numba import cuda

from . import tensor_data
from .tensor_data import MAX_DIMS, Shape, Storage, Strides, TensorData, shape_broadcast
from .tensor_ops import MapProto, TensorOps, matmul_shapes, reduced_shape

if TYPE_CHECKING:
    from .tensor import Tensor

THREADS_PER_BLOCK = 32
REDUCE_BLOCK = 1024  # most threads one output cell of a reduction may use
TILE = 32  # matrix-multiply tile edge; a block is TILE x TILE threads


def device_jit(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Compile ``fn`` as a function callable from kernels."""
    return cuda.jit(device=True, **kwargs)(fn)


def jit(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Compile ``fn`` as a kernel launched from the host as ``kernel[blocks, threads](...)``."""
    return cuda.jit(**kwargs)(fn)


to_index = device_jit(tensor_data.to_index)
index_to_position = device_jit(tensor_data.index_to_position)
broadcast_index = device_jit(tensor_data.broadcast_index)


def _blocks(n: int, per_block: int) -> int:
    return (n + per_block - 1) // per_block


class CudaOps(TensorOps):
    cuda = True

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        kernel = tensor_map(device_jit(fn))

        def apply(a: Tensor, out: Tensor | None = None) -> Tensor:
            if out is None:
                out = a.zeros(a.shape)
            blocks = _blocks(out.size, THREADS_PER_BLOCK)
            kernel[blocks, THREADS_PER_BLOCK](*out.tuple(), out.size, *a.tuple())
            return out

        return apply

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        kernel = tensor_zip(device_jit(fn))

        def apply(a: Tensor, b: Tensor) -> Tensor:
            out = a.zeros(shape_broadcast(a.shape, b.shape))
            blocks = _blocks(out.size, THREADS_PER_BLOCK)
            kernel[blocks, THREADS_PER_BLOCK](*out.tuple(), out.size, *a.tuple(), *b.tuple())
            return out

        return apply

    @staticmethod
    def reduce(fn: Callable[[float, float], float], start: float = 0.0) -> Callable[[Tensor, int], Tensor]:
        kernel = tensor_reduce(device_jit(fn))

        def apply(a: Tensor, dim: int) -> Tensor:
            out = a.zeros(reduced_shape(a.shape, dim))
            # Enough threads to cover the reduced dim once (a power of two, for the tree fold).
            threads = 1
            while threads < min(a.shape[dim], REDUCE_BLOCK):
                threads *= 2
            kernel[out.size, threads](*out.tuple(), out.size, *a.tuple(), dim, start)
            return out

        return apply

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        """Batched ``a @ b`` with shared-memory tiles; 2-D inputs come back 2-D."""
        out_shape, both_2d = matmul_shapes(a, b)
        if a.dims > 3 or b.dims > 3:
            raise ValueError(f"the CUDA matmul handles at most one batch dim, got {a.shape} @ {b.shape}")
        a3 = a.contiguous().view(1, *a.shape) if a.dims == 2 else a
        b3 = b.contiguous().view(1, *b.shape) if b.dims == 2 else b
        batch = max(a3.shape[0], b3.shape[0])
        out = a.zeros((batch, a3.shape[1], b3.shape[2]))
        blocks = (_blocks(out.shape[1], TILE), _blocks(out.shape[2], TILE), batch)
        tensor_matrix_multiply[blocks, (TILE, TILE)](*out.tuple(), out.size, *a3.tuple(), *b3.tuple())
        return out.view(out.shape[1], out.shape[2]) if both_2d else out.view(*out_shape)


# ## Kernels


def tensor_map(fn: Callable[[float], float]) -> Any:
    """Kernel: one thread per output element, ``out = fn(in)`` with broadcasting."""

    def _map(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        out_size: int,
        in_storage: Storage,
        in_shape: Shape,
        in_strides: Strides,
    ) -> None:
        out_index = cuda.local.array(MAX_DIMS, numba.int32)
        in_index = cuda.local.array(MAX_DIMS, numba.int32)
        i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if i < out_size:
            to_index(i, out_shape, out_index)
            broadcast_index(out_index, out_shape, in_shape, in_index)
            value = in_storage[index_to_position(in_index, in_strides)]
            out[index_to_position(out_index, out_strides)] = fn(value)

    return jit(_map)


def tensor_zip(fn: Callable[[float, float], float]) -> Any:
    """Kernel: one thread per output element, ``out = fn(a, b)`` with broadcasting."""

    def _zip(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        out_size: int,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        b_storage: Storage,
        b_shape: Shape,
        b_strides: Strides,
    ) -> None:
        out_index = cuda.local.array(MAX_DIMS, numba.int32)
        a_index = cuda.local.array(MAX_DIMS, numba.int32)
        b_index = cuda.local.array(MAX_DIMS, numba.int32)
        i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if i < out_size:
            to_index(i, out_shape, out_index)
            broadcast_index(out_index, out_shape, a_shape, a_index)
            broadcast_index(out_index, out_shape, b_shape, b_index)
            a_value = a_storage[index_to_position(a_index, a_strides)]
            b_value = b_storage[index_to_position(b_index, b_strides)]
            out[index_to_position(out_index, out_strides)] = fn(a_value, b_value)

    return jit(_zip)


def tensor_reduce(fn: Callable[[float, float], float]) -> Any:
    """Kernel: one block per output cell; threads fold slices, then a shared-memory tree fold.

    ``start`` must be the identity of ``fn`` (0 for add, 1 for mul, -inf for max), because every
    thread starts its partial result from it.
    """

    def _reduce(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        out_size: int,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        reduce_dim: int,
        start: float,
    ) -> None:
        partial = cuda.shared.array(REDUCE_BLOCK, numba.float64)
        index = cuda.local.array(MAX_DIMS, numba.int32)
        cell = cuda.blockIdx.x
        thread = cuda.threadIdx.x
        threads = cuda.blockDim.x
        to_index(cell, out_shape, index)
        total = start
        j = thread
        while j < a_shape[reduce_dim]:
            index[reduce_dim] = j
            total = fn(total, a_storage[index_to_position(index, a_strides)])
            j += threads
        partial[thread] = total
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if thread < half:
                partial[thread] = fn(partial[thread], partial[thread + half])
            cuda.syncthreads()
            half //= 2
        if thread == 0:
            index[reduce_dim] = 0
            out[index_to_position(index, out_strides)] = partial[0]

    return jit(_reduce)


def _sum_practice(out: Storage, a: Storage, size: int) -> None:
    """Practice kernel: cell k of ``out`` is the sum of ``a[32k : 32k + 32]``.

    Each thread copies one value into shared memory, then the block halves the number of active
    threads each round, every active thread adding in its partner's value.
    """
    cache = cuda.shared.array(THREADS_PER_BLOCK, numba.float64)
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    pos = cuda.threadIdx.x
    cache[pos] = a[i] if i < size else 0.0
    cuda.syncthreads()
    half = THREADS_PER_BLOCK // 2
    while half > 0:
        if pos < half:
            cache[pos] += cache[pos + half]
        cuda.syncthreads()
        half //= 2
    if pos == 0:
        out[cuda.blockIdx.x] = cache[0]


jit_sum_practice = jit(_sum_practice)


def sum_practice(a: Tensor) -> TensorData:
    """Per-block sums of a 1-D tensor, as device-resident ``TensorData`` (at least 2 cells)."""
    (size,) = a.shape
    blocks = _blocks(size, THREADS_PER_BLOCK)
    out = TensorData([0.0] * max(2, blocks), (max(2, blocks),))
    out.to_cuda_()
    jit_sum_practice[blocks, THREADS_PER_BLOCK](out.tuple()[0], a._tensor._storage, size)
    return out


def _mm_practice(out: Storage, a: Storage, b: Storage, size: int) -> None:
    """Practice kernel: ``out = a @ b`` for contiguous square matrices of size <= 32, one block.

    Both inputs are copied to shared memory once; each thread then reads only shared memory to
    compute its output cell.
    """
    a_shared = cuda.shared.array((TILE, TILE), numba.float64)
    b_shared = cuda.shared.array((TILE, TILE), numba.float64)
    i = cuda.threadIdx.x
    j = cuda.threadIdx.y
    if i < size and j < size:
        a_shared[i, j] = a[i * size + j]
        b_shared[i, j] = b[i * size + j]
    cuda.syncthreads()
    if i < size and j < size:
        total = 0.0
        for k in range(size):
            total += a_shared[i, k] * b_shared[k, j]
        out[i * size + j] = total


jit_mm_practice = jit(_mm_practice)


def mm_practice(a: Tensor, b: Tensor) -> TensorData:
    """``a @ b`` for square matrices of size at most 32, as device-resident ``TensorData``."""
    (size, _) = a.shape
    if size > TILE or a.shape != (size, size) or b.shape != (size, size):
        raise ValueError(f"mm_practice needs two square matrices of size <= {TILE}: {a.shape}, {b.shape}")
    out = TensorData([0.0] * (size * size), (size, size))
    out.to_cuda_()
    a_storage = a.contiguous()._tensor._storage
    b_storage = b.contiguous()._tensor._storage
    jit_mm_practice[1, (TILE, TILE)](out.tuple()[0], a_storage, b_storage, size)
    return out


def _tensor_matrix_multiply(
    out: Storage,
    out_shape: Shape,
    out_strides: Strides,
    out_size: int,
    a_storage: Storage,
    a_shape: Shape,
    a_strides: Strides,
    b_storage: Storage,
    b_shape: Shape,
    b_strides: Strides,
) -> None:
    """Tiled batched matmul: block (x, y, z) computes a TILE x TILE tile of batch z.

    For each step along the shared dimension the block copies one tile of ``a`` and one of ``b``
    into shared memory (out-of-range cells as 0), waits, accumulates the tile products, and waits
    again before the next copy overwrites the tiles. A batch dim of size 1 broadcasts (stride 0).
    """
    a_shared = cuda.shared.array((TILE, TILE), numba.float64)
    b_shared = cuda.shared.array((TILE, TILE), numba.float64)
    a_batch_stride = a_strides[0] if a_shape[0] > 1 else 0
    b_batch_stride = b_strides[0] if b_shape[0] > 1 else 0
    batch = cuda.blockIdx.z
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    j = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    pi = cuda.threadIdx.x
    pj = cuda.threadIdx.y
    inner = a_shape[2]
    total = 0.0
    for tile_start in range(0, inner, TILE):
        k = tile_start + pj
        if i < a_shape[1] and k < inner:
            a_shared[pi, pj] = a_storage[batch * a_batch_stride + i * a_strides[1] + k * a_strides[2]]
        else:
            a_shared[pi, pj] = 0.0
        k = tile_start + pi
        if j < b_shape[2] and k < inner:
            b_shared[pi, pj] = b_storage[batch * b_batch_stride + k * b_strides[1] + j * b_strides[2]]
        else:
            b_shared[pi, pj] = 0.0
        cuda.syncthreads()
        for kk in range(TILE):
            total += a_shared[pi, kk] * b_shared[kk, pj]
        cuda.syncthreads()
    if i < out_shape[1] and j < out_shape[2]:
        out[batch * out_strides[0] + i * out_strides[1] + j * out_strides[2]] = total


tensor_matrix_multiply = jit(_tensor_matrix_multiply)
