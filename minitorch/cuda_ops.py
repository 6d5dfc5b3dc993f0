"""Module 3: the backend interface as numba.cuda kernels, plus the course's practice kernels.

One GPU thread computes one output element for map and zip; reduce gives each output cell a
block of threads that fold strided slices of the reduced dimension and then combine their partial
results in shared memory; matrix multiply loads 32x32 tiles of both operands into shared memory
so each input value is read from global memory once per tile instead of once per product.

Data stays on the GPU: a tensor on this backend keeps its storage as a numba device array (moved
once, when the tensor is made), outputs are allocated on the device, and shapes and strides go
to kernels as tuples, which travel inside the launch itself. A host numpy array handed to a
kernel would instead be copied to the GPU before the launch and back after it, every launch.
``Tensor.to_numpy`` is the one place values come back to the host.

Importing this module never needs a GPU (kernels compile on first launch). Tests run the kernels
on the CPU with numba's simulator (environment variable ``NUMBA_ENABLE_CUDASIM=1`` set before
numba is imported).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numba
import numba.cuda
import numpy as np
from numba import cuda

from . import tensor_data
from .operators import prod
from .tensor_data import MAX_DIMS, Storage, TensorData, shape_broadcast
from .tensor_ops import MapProto, TensorOps, matmul_shapes, reduced_shape

if TYPE_CHECKING:
    from .tensor import Tensor

# A warp is 32 threads; 256 threads (8 warps) per block give the scheduler enough warps to hide
# memory latency while staying well inside the per-block register and shared-memory limits
# (1024 threads only launch if the kernel needs at most 64 registers per thread).
THREADS_PER_BLOCK = 256  # map and zip
REDUCE_BLOCK = 256  # most threads one output cell of a reduction may use
PRACTICE_BLOCK = 32  # sum_practice: the exercise sums 32 values per block

# Matrix multiply: a block computes a TILE x TILE output tile with TILE x TILE_ROWS threads (one
# warp per row of threads, 256 in all); each thread computes ROWS_PER_THREAD cells of one column.
TILE = 32
TILE_ROWS = 8
ROWS_PER_THREAD = TILE // TILE_ROWS
TILE_STRIDE = TILE + 1  # row length of a shared tile: one spare column (see the matmul kernel)


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


def _elementwise_threads(n: int) -> int:
    """Threads per block for ``n`` one-thread-per-element jobs: whole warps, at most 256.

    A small tensor gets fewer warps: a warp with no element to compute is scheduled all the same.
    """
    return min(THREADS_PER_BLOCK, 32 * _blocks(n, 32))


IntTuple = tuple[int, ...]  # shapes and strides as kernels take them
KernelArgs = tuple[Any, IntTuple, IntTuple]


def _kernel_args(t: Tensor) -> KernelArgs:
    """(storage, shape, strides) of ``t`` as a kernel takes them: a device array and two tuples."""
    t._tensor.to_cuda_()  # a no-op for tensors of this backend, whose storage is already there
    return t._tensor._storage, t._tensor.shape, t._tensor.strides


def _device_output(like: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A tensor of ``shape`` on ``like``'s backend whose storage is allocated on the GPU.

    Left uninitialised: every kernel here writes each of its output cells, so zero-filling first
    would only cost a host-to-device copy.
    """
    return like._new_from(cuda.device_array(int(prod(shape)), dtype=np.float64), shape)


def _batched(t: Tensor) -> KernelArgs:
    """Kernel arguments of ``t`` as a batch of matrices: a 2-D matrix is a batch of one.

    Only shape and strides change, so a transposed view is multiplied in place, without a copy.
    """
    storage, shape, strides = _kernel_args(t)
    if len(shape) == 2:
        return storage, (1, *shape), (0, *strides)
    return storage, shape, strides


class CudaOps(TensorOps):
    cuda = True

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        kernel = tensor_map(device_jit(fn))

        def apply(a: Tensor, out: Tensor | None = None) -> Tensor:
            if out is None:
                out = _device_output(a, a.shape)
            threads = _elementwise_threads(out.size)
            kernel[_blocks(out.size, threads), threads](*_kernel_args(out), out.size, *_kernel_args(a))
            return out

        return apply

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        kernel = tensor_zip(device_jit(fn))

        def apply(a: Tensor, b: Tensor) -> Tensor:
            out = _device_output(a, shape_broadcast(a.shape, b.shape))
            threads = _elementwise_threads(out.size)
            kernel[_blocks(out.size, threads), threads](
                *_kernel_args(out), out.size, *_kernel_args(a), *_kernel_args(b)
            )
            return out

        return apply

    @staticmethod
    def reduce(fn: Callable[[float, float], float], start: float = 0.0) -> Callable[[Tensor, int], Tensor]:
        kernel = tensor_reduce(device_jit(fn))

        def apply(a: Tensor, dim: int) -> Tensor:
            out = _device_output(a, reduced_shape(a.shape, dim))
            # Enough threads to cover the reduced dim once (a power of two, for the tree fold).
            threads = 1
            while threads < min(a.shape[dim], REDUCE_BLOCK):
                threads *= 2
            kernel[out.size, threads](*_kernel_args(out), out.size, *_kernel_args(a), dim, start)
            return out

        return apply

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        """Batched ``a @ b`` with shared-memory tiles; 2-D inputs come back 2-D."""
        out_shape, _ = matmul_shapes(a, b)
        if a.dims > 3 or b.dims > 3:
            raise ValueError(f"the CUDA matmul handles at most one batch dim, got {a.shape} @ {b.shape}")
        a_args, b_args = _batched(a), _batched(b)
        (a_batch, rows, _), (b_batch, _, cols) = a_args[1], b_args[1]
        batch = max(a_batch, b_batch)
        out = _device_output(a, (batch, rows, cols))
        # x walks output columns, y output rows (see _tensor_matrix_multiply), z the batch.
        blocks = (_blocks(cols, TILE), _blocks(rows, TILE), batch)
        tensor_matrix_multiply[blocks, (TILE, TILE_ROWS)](
            *_kernel_args(out), out.size, *a_args, *b_args
        )
        return out.view(*out_shape)


# ## Kernels


def tensor_map(fn: Callable[[float], float]) -> Any:
    """Kernel: one thread per output element, ``out = fn(in)`` with broadcasting."""

    def _map(
        out: Storage,
        out_shape: IntTuple,
        out_strides: IntTuple,
        out_size: int,
        in_storage: Storage,
        in_shape: IntTuple,
        in_strides: IntTuple,
    ) -> None:
        out_index = cuda.local.array(MAX_DIMS, numba.int32)
        in_index = cuda.local.array(MAX_DIMS, numba.int32)
        # Consecutive threads take consecutive row-major ordinals, so a warp writes neighbouring
        # cells of a contiguous output and reads neighbouring cells of an input laid out alike.
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
        out_shape: IntTuple,
        out_strides: IntTuple,
        out_size: int,
        a_storage: Storage,
        a_shape: IntTuple,
        a_strides: IntTuple,
        b_storage: Storage,
        b_shape: IntTuple,
        b_strides: IntTuple,
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
        out_shape: IntTuple,
        out_strides: IntTuple,
        out_size: int,
        a_storage: Storage,
        a_shape: IntTuple,
        a_strides: IntTuple,
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
        # Neighbouring threads read neighbouring elements of the reduced dim: one transaction per
        # warp when that dim is the contiguous one, a scattered read otherwise.
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
    cache = cuda.shared.array(PRACTICE_BLOCK, numba.float64)
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    pos = cuda.threadIdx.x
    cache[pos] = a[i] if i < size else 0.0
    cuda.syncthreads()
    half = PRACTICE_BLOCK // 2
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
    blocks = _blocks(size, PRACTICE_BLOCK)
    out = TensorData([0.0] * max(2, blocks), (max(2, blocks),))
    out.to_cuda_()
    jit_sum_practice[blocks, PRACTICE_BLOCK](out.tuple()[0], _kernel_args(a)[0], size)
    return out


def _mm_practice(out: Storage, a: Storage, b: Storage, size: int) -> None:
    """Practice kernel: ``out = a @ b`` for contiguous square matrices of size <= 32, one block.

    Both inputs are copied to shared memory once; each thread then reads only shared memory to
    compute its output cell.
    """
    a_shared = cuda.shared.array((TILE, TILE), numba.float64)
    b_shared = cuda.shared.array((TILE, TILE), numba.float64)
    # The threads of a warp have consecutive threadIdx.x. Making x the column means a warp reads
    # a run of neighbouring addresses of a and b (one memory transaction, not one per thread) and
    # touches neighbouring shared-memory cells, which sit in different banks.
    row = cuda.threadIdx.y
    col = cuda.threadIdx.x
    if row < size and col < size:
        a_shared[row, col] = a[row * size + col]
        b_shared[row, col] = b[row * size + col]
    cuda.syncthreads()
    if row < size and col < size:
        total = 0.0
        for k in range(size):
            total += a_shared[row, k] * b_shared[k, col]
        out[row * size + col] = total


jit_mm_practice = jit(_mm_practice)


def mm_practice(a: Tensor, b: Tensor) -> TensorData:
    """``a @ b`` for square matrices of size at most 32, as device-resident ``TensorData``.

    The exercise is a single block with one thread per output cell, so size 32 launches 1024
    threads; the kernel is small enough (few registers) for that to fit.
    """
    (size, _) = a.shape
    if size > TILE or a.shape != (size, size) or b.shape != (size, size):
        raise ValueError(f"mm_practice needs two square matrices of size <= {TILE}: {a.shape}, {b.shape}")
    out = TensorData([0.0] * (size * size), (size, size))
    out.to_cuda_()
    a_storage = _kernel_args(a.contiguous())[0]
    b_storage = _kernel_args(b.contiguous())[0]
    jit_mm_practice[1, (size, size)](out.tuple()[0], a_storage, b_storage, size)
    return out


def _load_tile(
    tile: Storage,
    storage: Storage,
    base: int,
    rows: int,
    cols: int,
    row_stride: int,
    col_stride: int,
    row0: int,
    col0: int,
) -> None:
    """Copy the TILE x TILE block at (row0, col0) of a strided matrix into the shared ``tile``.

    Cells past the edge of the matrix become 0, so a partial tile adds nothing to the products.
    """
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    # A warp is 32 threads with the same ty and consecutive tx. Global memory serves a warp's
    # loads in 32-byte sectors, so tx must walk the matrix's contiguous direction: usually the
    # columns, but the rows of a transposed view (the backward pass multiplies by b^T and a^T).
    # The choice depends on kernel arguments only, so the whole block takes the same branch.
    rows_along_x = cols == 1 or (rows > 1 and row_stride < col_stride)
    for step in range(ROWS_PER_THREAD):
        if rows_along_x:
            r = tx
            c = ty + step * TILE_ROWS
        else:
            r = ty + step * TILE_ROWS
            c = tx
        i = row0 + r
        j = col0 + c
        if i < rows and j < cols:
            tile[r, c] = storage[base + i * row_stride + j * col_stride]
        else:
            tile[r, c] = 0.0


load_tile = device_jit(_load_tile)


def _tensor_matrix_multiply(
    out: Storage,
    out_shape: IntTuple,
    out_strides: IntTuple,
    out_size: int,
    a_storage: Storage,
    a_shape: IntTuple,
    a_strides: IntTuple,
    b_storage: Storage,
    b_shape: IntTuple,
    b_strides: IntTuple,
) -> None:
    """Tiled batched matmul: block (x, y, z) computes the output tile at column tile x, row tile y
    of batch z, with TILE x TILE_ROWS threads.

    Thread (tx, ty) computes column ``tx`` of the tile, rows ``ty, ty + TILE_ROWS, ...``. For each
    step along the shared dimension the block copies one tile of ``a`` and one of ``b`` into
    shared memory, waits, accumulates the tile products, and waits again before the next copy
    overwrites the tiles. A batch dim of size 1 broadcasts (stride 0).
    """
    # Shared memory is 32 banks of 4 bytes; accesses of one warp to different addresses in the
    # same bank are served one after another. When a tile is loaded down its columns (a
    # transposed operand), a warp writes 32 cells one row apart. Rows of 32 float64 (256 bytes)
    # would put all of them in the same bank pair: 32 passes. A row of TILE_STRIDE = 33 values
    # starts one bank pair further on, so the cells spread evenly over all 32 banks: 2 passes,
    # the least any warp-wide float64 access takes.
    a_tile = cuda.shared.array((TILE, TILE_STRIDE), numba.float64)
    b_tile = cuda.shared.array((TILE, TILE_STRIDE), numba.float64)
    acc = cuda.local.array(ROWS_PER_THREAD, numba.float64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    batch = cuda.blockIdx.z
    row0 = cuda.blockIdx.y * TILE
    col0 = cuda.blockIdx.x * TILE
    a_base = batch * a_strides[0] if a_shape[0] > 1 else 0
    b_base = batch * b_strides[0] if b_shape[0] > 1 else 0
    rows = a_shape[1]
    inner = a_shape[2]
    cols = b_shape[2]
    for s in range(ROWS_PER_THREAD):
        acc[s] = 0.0
    for k0 in range(0, inner, TILE):
        load_tile(a_tile, a_storage, a_base, rows, inner, a_strides[1], a_strides[2], row0, k0)
        load_tile(b_tile, b_storage, b_base, inner, cols, b_strides[1], b_strides[2], k0, col0)
        cuda.syncthreads()
        for kk in range(TILE):
            # The warp reads one row of b_tile (neighbouring cells: distinct banks) and one cell
            # of a_tile per product (the same address for all 32 threads: a single broadcast).
            # Each b value is reused for ROWS_PER_THREAD products from a register.
            b_value = b_tile[kk, tx]
            for s in range(ROWS_PER_THREAD):
                acc[s] += a_tile[ty + s * TILE_ROWS, kk] * b_value
        cuda.syncthreads()
    j = col0 + tx
    for s in range(ROWS_PER_THREAD):
        i = row0 + ty + s * TILE_ROWS
        if i < rows and j < cols:
            out[batch * out_strides[0] + i * out_strides[1] + j * out_strides[2]] = acc[s]


tensor_matrix_multiply = jit(_tensor_matrix_multiply)
