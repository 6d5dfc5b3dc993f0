"""Checks of the CUDA backend, run as a script under numba's CUDA simulator.

``test_minitorch_cuda.py`` runs this file in a fresh interpreter with NUMBA_ENABLE_CUDASIM=1
(the variable must be set before numba is first imported, so it cannot run in the test process)
and turns each named check into a test. On a real GPU, run it directly (without the variable)
to test the kernels there; the checks that record what each thread touches need the simulator,
which runs every GPU thread as a Python thread, so a wrapped array can ask
``threading.current_thread()`` for its block and thread index; on a GPU they are skipped.

Usage: ``cuda_sim_check.py [--report FILE] [--only NAME ...]``. Prints ``ok NAME``, ``FAIL NAME:
why`` or (on a GPU, for the recording checks) ``skip NAME`` per check, and ``all CUDA checks
passed`` when none failed; ``--report`` also writes ``{name: null or the failure}`` for the checks
that ran as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import threading
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import cuda

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import minitorch  # noqa: E402
from minitorch import cuda_ops  # noqa: E402
from minitorch.tensor_data import is_device_array  # noqa: E402

CUDA = minitorch.TensorBackend(minitorch.CudaOps)
CHECKS: dict[str, Callable[[], None]] = {}
SIMULATOR_ONLY: set[str] = set()  # they wrap the simulator's internals or pass Python objects


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS[fn.__name__] = fn
    return fn


def simulator_check(fn: Callable[[], None]) -> Callable[[], None]:
    SIMULATOR_ONLY.add(fn.__name__)
    return check(fn)


def close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9, err_msg=what)


def on_cuda(values: np.ndarray, order: tuple[int, ...] | None = None) -> minitorch.Tensor:
    """A CUDA-backend tensor holding ``values``, optionally stored permuted (non-contiguous)."""
    if order is None:
        return minitorch.tensor(values.tolist(), backend=CUDA)
    stored = np.ascontiguousarray(values.transpose(order))
    t = minitorch.Tensor.make(stored.ravel().copy(), stored.shape, backend=CUDA)
    return t.permute(*np.argsort(order))


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ## Values: every op against numpy


@check
def map_zip() -> None:
    a, b = rng().normal(size=(2, 3, 4)), rng().normal(size=(3, 1))
    ta, tb = on_cuda(a, (2, 0, 1)), on_cuda(b)
    close((ta * 0.1).exp().to_numpy(), np.exp(a * 0.1), "map exp on a permuted layout")
    close((ta + tb).to_numpy(), a + b, "zip add with broadcasting")
    close((ta < tb).to_numpy(), (a < b).astype(float), "zip lt")
    big = rng().normal(size=(3, 700))  # several blocks of 256 threads, the last one partial
    close(on_cuda(big).relu().to_numpy(), np.maximum(big, 0.0), "map over 2100 elements")


@check
def reduce() -> None:
    a = rng().normal(size=(2, 3, 4))
    ta = on_cuda(a, (2, 0, 1))
    for dim in range(3):
        close(ta.sum(dim).to_numpy(), a.sum(axis=dim, keepdims=True), f"reduce sum over dim {dim}")
    long = rng().normal(size=(3, 1500))
    close(on_cuda(long).sum(1).to_numpy(), long.sum(axis=1, keepdims=True), "reduce over 1500 (> 256 threads)")
    close(minitorch.max(on_cuda(a), 1).to_numpy(), a.max(axis=1, keepdims=True), "max reduce")


@check
def matmul_small_shapes() -> None:
    gen = rng()
    for shape_a, shape_b in [((2, 3), (3, 2)), ((33, 5), (5, 34)), ((2, 4, 33), (1, 33, 3))]:
        x, y = gen.normal(size=shape_a), gen.normal(size=shape_b)
        close((on_cuda(x) @ on_cuda(y)).to_numpy(), x @ y, f"matmul {shape_a} @ {shape_b}")
    x, y = gen.normal(size=(3, 4)), gen.normal(size=(4, 2))
    close((on_cuda(x, (1, 0)) @ on_cuda(y)).to_numpy(), x @ y, "matmul of a transposed layout")


@check
def matmul_off_tile_shapes() -> None:
    """Shapes that are not multiples of the 32-wide tile, so every block edge is partial."""
    gen = rng()
    cases = [
        ((33, 17), (17, 45)),
        ((2, 33, 17), (2, 17, 45)),  # batched
        ((1, 20, 17), (2, 17, 20)),  # batch of a broadcast
        ((20, 17), (2, 17, 20)),  # 2-D times batched
        ((33, 70), (70, 20)),  # three steps along the shared dim, the last one partial
        ((40, 1), (1, 5)),  # outer product
        ((33, 17), (17, 1)),  # matrix times column
        ((1, 17), (17, 45)),  # row times matrix
    ]
    for shape_a, shape_b in cases:
        x, y = gen.normal(size=shape_a), gen.normal(size=shape_b)
        close((on_cuda(x) @ on_cuda(y)).to_numpy(), x @ y, f"matmul {shape_a} @ {shape_b}")
    # Stored transposed, as the backward pass multiplies by views of a^T and b^T.
    x, y = gen.normal(size=(2, 20, 40)), gen.normal(size=(2, 40, 20))
    close((on_cuda(x, (0, 2, 1)) @ on_cuda(y, (0, 2, 1))).to_numpy(), x @ y,
          "batched matmul of two transposed layouts")
    x, y = gen.normal(size=(33, 17)), gen.normal(size=(17, 20))
    tx, ty = on_cuda(x), on_cuda(y)
    close((tx.permute(1, 0).contiguous().permute(1, 0) @ ty).to_numpy(), x @ y,
          "transposed view of a transposed copy")


@check
def matmul_gradient() -> None:
    gen = rng()
    x, y = gen.normal(size=(33, 40)), gen.normal(size=(40, 17))
    tx, ty = on_cuda(x), on_cuda(y)
    tx.requires_grad_(True)
    ty.requires_grad_(True)
    (tx @ ty).sum().backward()
    ones = np.ones((33, 17))
    close(tx.grad.to_numpy(), ones @ y.T, "gradient of a")
    close(ty.grad.to_numpy(), x.T @ ones, "gradient of b")


@check
def practice_kernels() -> None:
    gen = rng()
    for n in (16, 48, 64):
        v = gen.random(n)
        cells = minitorch.sum_practice(on_cuda(v))
        close(np.array(cells._storage[0] + cells._storage[1]), np.array(v.sum()), f"sum_practice of {n}")
    for size in (2, 5, 32):
        x, y = gen.random((size, size)), gen.random((size, size))
        out = minitorch.mm_practice(on_cuda(x), on_cuda(y))
        close(out._storage.copy_to_host().reshape(size, size), x @ y, f"mm_practice {size}x{size}")


# ## Device arrays on the host side


@check
def to_numpy_of_device_arrays() -> None:
    values = np.arange(6.0)
    device = cuda.to_device(values)
    t = minitorch.Tensor.make(device, (2, 3), backend=CUDA)
    assert t._tensor._storage is device, "TensorData must keep a device array, not copy it to the host"
    got = t.to_numpy()
    assert type(got) is np.ndarray, f"to_numpy gave {type(got).__name__}, not a numpy array"
    close(got, values.reshape(2, 3), "to_numpy of a device array")
    got[0, 0] = 100.0
    close(t.to_numpy(), values.reshape(2, 3), "to_numpy returns a copy, not the device memory")
    close(t.permute(1, 0).to_numpy(), values.reshape(2, 3).T, "to_numpy of a permuted device view")
    assert t[1, 2] == 5.0 and t.sum().item() == 15.0, "indexing and item() read the device"
    assert "5.00" in repr(t), "printing reads the device"
    host = minitorch.tensor([[1.0, 2.0]])
    first = host.to_numpy()
    first[0, 0] = 9.0
    assert host[0, 0] == 1.0, "to_numpy of host storage must still copy"


@contextmanager
def recording_launches() -> Iterator[list[tuple[str, tuple[int, int, int], list[Any]]]]:
    """Record (kernel, block shape, arguments) of every kernel launch (not device-function call)."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    launches: list[tuple[str, tuple[int, int, int], list[Any]]] = []
    original = FakeCUDAKernel.__call__

    def call(self: Any, *args: Any) -> Any:
        if not self._device:
            launches.append((self.fn.__name__, tuple(self.block_dim), list(args)))
        return original(self, *args)

    FakeCUDAKernel.__call__ = call
    try:
        yield launches
    finally:
        FakeCUDAKernel.__call__ = original


@functools.cache
def training_step_launches() -> list[tuple[str, tuple[int, int, int], list[Any]]]:
    """The launches of forward and backward of a two-layer network: every kind of kernel."""
    with recording_launches() as launches:
        small_training_step()
    return launches


def small_training_step() -> None:
    gen = rng()
    x = on_cuda(gen.normal(size=(5, 33)))
    w1, w2 = on_cuda(gen.normal(size=(33, 20))), on_cuda(gen.normal(size=(20, 3)))
    bias = on_cuda(gen.normal(size=(20,)))
    for p in (w1, w2, bias):
        p.requires_grad_(True)
    hidden = (x @ w1 + bias).relu()
    loss = minitorch.max((hidden @ w2).sigmoid(), 1).sum()
    loss.backward()


@simulator_check
def device_residency() -> None:
    """After tensors are made, kernels get device arrays only: numba copies nothing per launch."""
    launches = training_step_launches()
    kernels = {name for name, _, _ in launches}
    assert {"_map", "_zip", "_reduce", "_tensor_matrix_multiply"} <= kernels, kernels
    host = [(name, i) for name, _, args in launches for i, arg in enumerate(args)
            if isinstance(arg, np.ndarray)]
    assert not host, f"host numpy arrays passed to kernels (copied in and out each launch): {host[:5]}"
    outputs = [args[0] for _, _, args in launches]
    assert all(is_device_array(out) for out in outputs), "an output was allocated on the host"


@simulator_check
def launch_sizes() -> None:
    """At most 256 threads per block, so a block launches even when a kernel needs many registers."""
    with recording_launches() as launches:
        on_cuda(rng().normal(size=(2, 1500))).sum(1)
        minitorch.sum_practice(on_cuda(rng().random(64)))
    sizes = Counter((name, block) for name, block, _ in training_step_launches() + launches)
    too_big = [(name, block) for name, block in sizes if block[0] * block[1] * block[2] > 256]
    assert not too_big, f"blocks of more than 256 threads: {too_big}"
    assert ("_tensor_matrix_multiply", (cuda_ops.TILE, cuda_ops.TILE_ROWS, 1)) in sizes, sizes


# ## What each thread of the matmul kernel touches


class Recorder:
    """An array that logs, per access, the simulated block and thread that made it."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.log: list[tuple[tuple[int, ...], tuple[int, ...], str, int]] = []

    def _note(self, kind: str, key: Any) -> None:
        thread = threading.current_thread()
        flat = int(np.ravel_multi_index(key, self.values.shape)) if isinstance(key, tuple) else int(key)
        self.log.append((tuple(thread.blockIdx), tuple(thread.threadIdx), kind, flat))

    def __getitem__(self, key: Any) -> Any:
        self._note("read", key)
        return self.values[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._note("write", key)
        self.values[key] = value

    def warp_requests(self, kind: str) -> dict[tuple[Any, ...], dict[int, int]]:
        """Accesses grouped as the hardware issues them: the n-th ``kind`` access of every thread
        of one warp is one request. Maps (block, warp, n) to {lane: flat position}."""
        requests: dict[tuple[Any, ...], dict[int, int]] = defaultdict(dict)
        count: Counter[tuple[Any, ...]] = Counter()
        for block, thread, k, flat in self.log:  # each thread's own accesses are in program order
            if k != kind:
                continue
            linear = thread[0] + cuda_ops.TILE * thread[1]  # blockDim.x is TILE = one warp
            n = count[block, thread]
            count[block, thread] += 1
            requests[block, linear // 32, n][linear % 32] = flat
        return requests


@contextmanager
def recording_shared() -> Iterator[list[Recorder]]:
    """Make ``cuda.shared.array`` return Recorders (one per source line, as the simulator does)."""
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    made: list[Recorder] = []
    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()  # the block's threads all ask at once; they must get one array

    def array(self: Any, shape: Any, dtype: Any) -> Recorder:
        caller = sys._getframe(1)
        key = (caller.f_code, caller.f_lineno)
        with lock:
            arrays = self.__dict__.setdefault("recorders", {})
            if key not in arrays:
                if not isinstance(dtype, np.dtype):
                    dtype = numpy_support.as_dtype(dtype)
                arrays[key] = Recorder(np.zeros(shape, dtype))
                made.append(arrays[key])
            return arrays[key]

    kernelapi.FakeCUDAShared.array = array
    try:
        yield made
    finally:
        kernelapi.FakeCUDAShared.array = original


def launch_matmul(x: np.ndarray, y: np.ndarray, x_transposed: bool = False) -> tuple[Recorder, ...]:
    """Run the matmul kernel once on 2-D ``x @ y`` with recorded storages; ``x_transposed``
    stores x column by column (the layout of a transposed view)."""
    (rows, inner), (_, cols) = x.shape, y.shape
    if x_transposed:
        a = Recorder(np.ascontiguousarray(x.T).ravel())
        a_strides = (0, 1, rows)
    else:
        a = Recorder(x.ravel().copy())
        a_strides = (0, inner, 1)
    b = Recorder(y.ravel().copy())
    out = Recorder(np.full(rows * cols, np.nan))
    tile = cuda_ops.TILE
    blocks = ((cols + tile - 1) // tile, (rows + tile - 1) // tile, 1)
    cuda_ops.tensor_matrix_multiply[blocks, (tile, cuda_ops.TILE_ROWS)](
        out, (1, rows, cols), (rows * cols, cols, 1), rows * cols,
        a, (1, rows, inner), a_strides, b, (1, inner, cols), (0, cols, 1),
    )
    close(out.values.reshape(rows, cols), x @ y, f"recorded matmul {x.shape} @ {y.shape}")
    return a, b, out


@simulator_check
def matmul_thread_mapping() -> None:
    """threadIdx.x is the output column, so a warp (32 consecutive x) writes a row segment."""
    rows, cols = 40, 45  # partial tiles on both edges
    _, _, out = launch_matmul(rng().normal(size=(rows, 7)), rng().normal(size=(7, cols)))
    written = Counter(flat for *_, kind, flat in out.log if kind == "write")
    assert sorted(written) == list(range(rows * cols)), "some output cell was not written"
    assert set(written.values()) == {1}, "some output cell was written twice"
    tile, tile_rows = cuda_ops.TILE, cuda_ops.TILE_ROWS
    for (bx, by, _), (tx, ty, _), _, flat in out.log:
        row, col = divmod(flat, cols)
        assert col == bx * tile + tx, f"thread x={tx} of block x={bx} wrote column {col}"
        assert 0 <= row - by * tile - ty < tile and (row - by * tile - ty) % tile_rows == 0, (
            f"thread y={ty} of block y={by} wrote row {row}"
        )
    for (block, warp, _), lanes in out.warp_requests("write").items():
        flats = [lanes[lane] for lane in sorted(lanes)]
        assert flats == list(range(flats[0], flats[0] + len(flats))), (
            f"warp {warp} of block {block} wrote scattered cells {flats}"
        )


@simulator_check
def matmul_coalesced_loads() -> None:
    """Every warp load reads consecutive addresses, also from an operand stored transposed."""
    gen = rng()
    x, y = gen.normal(size=(64, 64)), gen.normal(size=(64, 64))  # whole tiles: every lane loads
    for x_transposed in (False, True):
        a, b, _ = launch_matmul(x, y, x_transposed)
        for name, storage in (("a", a), ("b", b)):
            requests = storage.warp_requests("read")
            assert requests, f"no loads of {name} recorded"
            for (block, warp, n), lanes in requests.items():
                flats = [lanes[lane] for lane in sorted(lanes)]
                assert len(flats) == 32 and flats == list(range(flats[0], flats[0] + 32)), (
                    f"load {n} of {name} (transposed x: {x_transposed}) by warp {warp} of block "
                    f"{block} reads scattered positions {flats[:6]}..."
                )


def bank_passes(flats: list[int]) -> int:
    """Shared-memory passes one warp request of float64 cells needs: 32 banks of 4 bytes, each
    serving one distinct 4-byte word per pass (a word read by many lanes is a broadcast)."""
    words = {w for f in set(flats) for w in (2 * f, 2 * f + 1)}
    return max(Counter(w % 32 for w in words).values())


@simulator_check
def matmul_shared_banks() -> None:
    """No warp access to the shared tiles takes more than the 2 passes of any float64 access."""
    gen = rng()
    assert bank_passes(list(range(32))) == 2 and bank_passes([0] * 32) == 1
    assert bank_passes([32 * lane for lane in range(32)]) == 32  # what an unpadded column costs
    x, y = gen.normal(size=(64, 32)), gen.normal(size=(32, 64))
    for x_transposed in (False, True):
        with recording_shared() as tiles:
            launch_matmul(x, y, x_transposed)
        assert len(tiles) == 2, f"expected the a and b tiles, got {len(tiles)} shared arrays"
        for which, tile in zip("ab", tiles):
            for kind in ("read", "write"):
                worst = max(bank_passes(list(lanes.values()))
                            for lanes in tile.warp_requests(kind).values())
                assert worst <= 2, (
                    f"{kind}s of the {which} tile (transposed x: {x_transposed}) take {worst} "
                    "passes: a bank conflict"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="write {check: null or failure} as JSON")
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="run only these checks")
    args = parser.parse_args()
    random.seed(0)
    failures: dict[str, str | None] = {}
    for name in args.only or CHECKS:
        if name in SIMULATOR_ONLY and not numba.config.ENABLE_CUDASIM:
            print(f"skip {name}: needs NUMBA_ENABLE_CUDASIM=1")
            continue
        try:
            CHECKS[name]()
        except Exception:
            failures[name] = traceback.format_exc(limit=3)
            print(f"FAIL {name}: {failures[name]}")
        else:
            failures[name] = None
            print(f"ok  {name}")
    if args.report:
        args.report.write_text(json.dumps(failures, indent=1))
    if any(failures.values()):
        return 1
    print("all CUDA checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
