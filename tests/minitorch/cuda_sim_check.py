"""Checks of the CUDA backend, run as a script under numba's CUDA simulator.

``test_minitorch_cuda.py`` runs this file in a fresh interpreter with NUMBA_ENABLE_CUDASIM=1
(the variable must be set before numba is first imported, so it cannot run in the test process).
On a real GPU it can also be run directly: ``python tests/minitorch/cuda_sim_check.py``.
Every check compares with numpy; the script exits non-zero on the first mismatch.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import minitorch  # noqa: E402

CUDA = minitorch.TensorBackend(minitorch.CudaOps)


def close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9, err_msg=what)
    print(f"ok  {what}")


def on_cuda(values: np.ndarray, order: tuple[int, ...] | None = None) -> minitorch.Tensor:
    """A CUDA-backend tensor holding ``values``, optionally stored permuted (non-contiguous)."""
    if order is None:
        return minitorch.tensor(values.tolist(), backend=CUDA)
    stored = np.ascontiguousarray(values.transpose(order))
    t = minitorch.Tensor.make(stored.ravel().copy(), stored.shape, backend=CUDA)
    return t.permute(*np.argsort(order))


def main() -> int:
    rng = np.random.default_rng(0)
    random.seed(0)
    a = rng.normal(size=(2, 3, 4))
    b = rng.normal(size=(3, 1))
    ta, tb = on_cuda(a, (2, 0, 1)), on_cuda(b)
    close((ta * 0.1).exp().to_numpy(), np.exp(a * 0.1), "map exp on a permuted layout")
    close((ta + tb).to_numpy(), a + b, "zip add with broadcasting")
    close((ta < tb).to_numpy(), (a < b).astype(float), "zip lt")
    for dim in range(3):
        close(ta.sum(dim).to_numpy(), a.sum(axis=dim, keepdims=True), f"reduce sum over dim {dim}")
    long = rng.normal(size=(3, 1500))
    close(on_cuda(long).sum(1).to_numpy(), long.sum(axis=1, keepdims=True), "reduce over 1500 (> 1024 threads)")
    close(minitorch.max(on_cuda(a), 1).to_numpy(), a.max(axis=1, keepdims=True), "max reduce")

    for shape_a, shape_b in [((2, 3), (3, 2)), ((33, 5), (5, 34)), ((2, 4, 33), (1, 33, 3))]:
        x, y = rng.normal(size=shape_a), rng.normal(size=shape_b)
        close((on_cuda(x) @ on_cuda(y)).to_numpy(), x @ y, f"matmul {shape_a} @ {shape_b}")
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    close((on_cuda(x, (1, 0)) @ on_cuda(y)).to_numpy(), x @ y, "matmul of a transposed layout")

    tx = on_cuda(x)
    tx.requires_grad_(True)
    ty = on_cuda(y)
    ty.requires_grad_(True)
    (tx @ ty).sum().backward()
    close(tx.grad.to_numpy(), np.ones((3, 2)) @ y.T, "matmul gradient")

    for n in (16, 48, 64):
        v = rng.random(n)
        cells = minitorch.sum_practice(on_cuda(v))
        close(np.array(cells._storage[0] + cells._storage[1]), np.array(v.sum()), f"sum_practice of {n}")
    for size in (2, 5):
        x, y = rng.random((size, size)), rng.random((size, size))
        out = minitorch.mm_practice(on_cuda(x), on_cuda(y))
        close(np.array([out._storage[i] for i in range(size * size)]).reshape(size, size), x @ y,
              f"mm_practice {size}x{size}")
    print("all CUDA checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
