"""Module 3: the numba backend against numpy and against the simple backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitorch
from minitorch import fast_ops

from .strategies import FAST, SIMPLE, arrays, assert_tensor_equals, few, permuted_tensor, smooth_floats

ONE_ARG, TWO_ARG, REDUCTIONS = minitorch.MathTestVariable._comp_testing()

# Keep numba tests on one xdist worker so each kernel is compiled once per test run.
pytestmark = pytest.mark.xdist_group("minitorch_numba")


@few
@given(st.data(), arrays())
@pytest.mark.parametrize("fn", ONE_ARG + REDUCTIONS, ids=[n for n, _, _ in ONE_ARG + REDUCTIONS])
def test_one_arg_fast_equals_simple(fn, data: st.DataObject, values: np.ndarray) -> None:
    _, _, tensor_fn = fn
    fast = tensor_fn(data.draw(permuted_tensor(values, FAST)))
    simple = tensor_fn(data.draw(permuted_tensor(values, SIMPLE)))
    np.testing.assert_allclose(fast.to_numpy(), simple.to_numpy(), rtol=1e-12, atol=1e-12)


@few
@given(st.data(), arrays())
@pytest.mark.parametrize("fn", TWO_ARG, ids=[n for n, _, _ in TWO_ARG])
def test_two_arg_fast_equals_simple_with_broadcast(fn, data: st.DataObject, a: np.ndarray) -> None:
    _, _, tensor_fn = fn
    n = data.draw(st.integers(1, a.ndim))
    b = data.draw(arrays(tuple(s if data.draw(st.booleans()) else 1 for s in a.shape[a.ndim - n:])))
    fast = tensor_fn(data.draw(permuted_tensor(a, FAST)), data.draw(permuted_tensor(b, FAST)))
    simple = tensor_fn(data.draw(permuted_tensor(a, SIMPLE)), data.draw(permuted_tensor(b, SIMPLE)))
    np.testing.assert_allclose(fast.to_numpy(), simple.to_numpy(), rtol=1e-12, atol=1e-12)


@few
@given(st.data(), arrays(elements=smooth_floats))
@pytest.mark.parametrize("fn", ONE_ARG[:4] + TWO_ARG[:3] + REDUCTIONS, ids=lambda f: f[0])
def test_fast_gradients_match_central_differences(fn, data: st.DataObject, values: np.ndarray) -> None:
    _, _, tensor_fn = fn
    inputs = [data.draw(permuted_tensor(values, FAST))]
    if fn in TWO_ARG:
        inputs.append(data.draw(permuted_tensor(values[::-1].copy(), FAST)))
    minitorch.grad_check(tensor_fn, *inputs)


@contextmanager
def parallel_kernels(on: bool = True) -> Iterator[None]:
    """Send even tiny tensors through the threaded (prange) kernels while active."""
    old = fast_ops.PARALLEL_MIN_SIZE
    fast_ops.PARALLEL_MIN_SIZE = 0 if on else old
    try:
        yield
    finally:
        fast_ops.PARALLEL_MIN_SIZE = old


@pytest.mark.slow  # compiles the threaded kernels: about 30-90 s on a busy two-core machine
@settings(deadline=None, max_examples=10)
@given(st.data(), arrays())
def test_parallel_kernels_match_numpy(data: st.DataObject, a: np.ndarray) -> None:
    with parallel_kernels():
        check_kernels_against_numpy(data, a)


def check_kernels_against_numpy(data: st.DataObject, a: np.ndarray) -> None:
    b = data.draw(arrays(tuple(1 if data.draw(st.booleans()) else s for s in a.shape)))
    ta, tb = data.draw(permuted_tensor(a, FAST)), data.draw(permuted_tensor(b, FAST))
    assert_tensor_equals(FAST.exp_map(ta * 0.01), np.exp(a * 0.01))
    assert_tensor_equals(FAST.mul_zip(ta, tb), a * b)
    out = ta.zeros(a.shape)
    FAST.neg_map(tb, out)  # map broadcasting into a larger output
    assert_tensor_equals(out, np.broadcast_to(-b, a.shape))
    for dim in range(a.ndim):
        assert_tensor_equals(FAST.add_reduce(ta, dim), a.sum(axis=dim, keepdims=True), atol=1e-9)
        assert_tensor_equals(FAST.max_reduce(ta, dim), a.max(axis=dim, keepdims=True))


@few
@given(st.data(), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.booleans())
def test_matmul_matches_numpy_for_any_layout(data, n, m, k, batch, parallel: bool) -> None:
    a = data.draw(arrays((batch, n, m)))
    b = data.draw(arrays((1, m, k)))
    with parallel_kernels(parallel):
        # Batched with a broadcast batch dim, then plain 2-D; inputs in permuted layouts.
        ta, tb = data.draw(permuted_tensor(a, FAST)), data.draw(permuted_tensor(b, FAST))
        np.testing.assert_allclose((ta @ tb).to_numpy(), a @ b, rtol=1e-9, atol=1e-9)
        ta2, tb2 = data.draw(permuted_tensor(a[0], FAST)), data.draw(permuted_tensor(b[0], FAST))
        product = ta2 @ tb2
        assert product.shape == (n, k)
        np.testing.assert_allclose(product.to_numpy(), a[0] @ b[0], rtol=1e-9, atol=1e-9)


def test_matmul_gradients_and_four_dim_batches() -> None:
    a = minitorch.rand((2, 3), backend=FAST)
    b = minitorch.rand((3, 4), backend=FAST)
    minitorch.grad_check(lambda x, y: x @ y, a, b)
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    y = np.random.default_rng(1).normal(size=(3, 5, 2))
    tx, ty = minitorch.tensor(x, backend=FAST), minitorch.tensor(y, backend=FAST)
    np.testing.assert_allclose((tx @ ty).to_numpy(), x @ y, atol=1e-9)
    with pytest.raises(minitorch.IndexingError, match=r"\(2, 3\).*\(4, 3\)"):
        minitorch.rand((2, 3), backend=FAST) @ minitorch.rand((4, 3), backend=FAST)


def test_kernels_are_numba_parallel_dispatchers() -> None:
    kernel = fast_ops.tensor_map(fast_ops.njit(minitorch.operators.id))
    assert kernel.targetoptions.get("parallel") is True
    assert fast_ops.tensor_matrix_multiply.targetoptions.get("parallel") is True
