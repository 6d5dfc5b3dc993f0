"""Module 2: tensor functions and their gradients on the simple backend.

Values are checked against numpy, gradients against central differences (``grad_check``) and,
for broadcasting, against gradients written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitorch
from minitorch import IndexingError

from .strategies import SIMPLE, arrays, assert_tensor_equals, few, permuted_tensor, smooth_floats

ONE_ARG, TWO_ARG, REDUCTIONS = minitorch.MathTestVariable._comp_testing()

NUMPY_ONE_ARG = {
    "neg": lambda a: -a,
    "addConstant": lambda a: 5 + a,
    "square": lambda a: a * a,
    "cube": lambda a: a * a * a,
    "subConstant": lambda a: a - 5,
    "multConstant": lambda a: 5 * a,
    "div": lambda a: a / 5,
    "inv": lambda a: 1 / (a + 3.5),
    "sig": lambda a: 1 / (1 + np.exp(-a)),
    "log": lambda a: np.log(a + 100000),
    "relu": lambda a: np.maximum(a + 5.5, 0),
    "exp": lambda a: np.exp(a - 200),
    "explog": lambda a: np.log(a + 100000) + np.exp(a - 200),
    "complex": lambda a: np.log(1 / (1 + np.exp(-np.maximum(np.maximum(10 * a + 7, 0) * 6 + 5, 0) * 10))) / 50,
}
NUMPY_TWO_ARG = {
    "add2": lambda a, b: a + b,
    "mul2": lambda a, b: a * b,
    "div2": lambda a, b: a / (b + 5.5),
    "gt2": lambda a, b: (a + 1.2 > b).astype(float),
    "lt2": lambda a, b: (a + 1.2 < b).astype(float),
    "eq2": lambda a, b: (a == b + 5.5).astype(float),
}


@few
@given(st.data(), arrays())
@pytest.mark.parametrize("fn", ONE_ARG, ids=[n for n, _, _ in ONE_ARG])
def test_one_arg_functions_match_numpy(fn, data: st.DataObject, values: np.ndarray) -> None:
    name, _, tensor_fn = fn
    t = data.draw(permuted_tensor(values, SIMPLE))
    with np.errstate(over="ignore"):
        expected = NUMPY_ONE_ARG[name](values)
    np.testing.assert_allclose(tensor_fn(t).to_numpy(), expected, rtol=1e-7, atol=1e-9)


@few
@given(st.data(), arrays())
@pytest.mark.parametrize("fn", TWO_ARG, ids=[n for n, _, _ in TWO_ARG])
def test_two_arg_functions_broadcast_like_numpy(fn, data: st.DataObject, a: np.ndarray) -> None:
    name, _, tensor_fn = fn
    # b has a shape that broadcasts against a: a suffix of a's shape with some dims set to 1.
    n = data.draw(st.integers(1, a.ndim))
    b_shape = tuple(s if data.draw(st.booleans()) else 1 for s in a.shape[a.ndim - n:])
    b = data.draw(arrays(b_shape))
    ta, tb = data.draw(permuted_tensor(a, SIMPLE)), data.draw(permuted_tensor(b, SIMPLE))
    for x, y, tx, ty in [(a, b, ta, tb), (b, a, tb, ta)]:
        assert_tensor_equals(tensor_fn(tx, ty), NUMPY_TWO_ARG[name](x, y))


@few
@given(st.data(), arrays(elements=smooth_floats))
@pytest.mark.parametrize("fn", ONE_ARG + REDUCTIONS, ids=[n for n, _, _ in ONE_ARG + REDUCTIONS])
def test_gradients_match_central_differences(fn, data: st.DataObject, values: np.ndarray) -> None:
    name, _, tensor_fn = fn
    minitorch.grad_check(tensor_fn, data.draw(permuted_tensor(values, SIMPLE)))


@few
@given(st.data(), arrays(elements=smooth_floats))
@pytest.mark.parametrize("fn", TWO_ARG, ids=[n for n, _, _ in TWO_ARG])
def test_two_arg_gradients_with_and_without_broadcast(fn, data: st.DataObject, a: np.ndarray) -> None:
    name, _, tensor_fn = fn
    b = data.draw(arrays(a.shape, elements=smooth_floats))
    ta, tb = data.draw(permuted_tensor(a, SIMPLE)), data.draw(permuted_tensor(b, SIMPLE))
    minitorch.grad_check(tensor_fn, ta, tb)
    minitorch.grad_check(tensor_fn, ta.sum(0), tb)
    minitorch.grad_check(tensor_fn, ta, tb.sum(0))


def test_broadcast_gradients_sum_over_stretched_dims() -> None:
    # d/da sum(a * b) with a (2, 1) and b (3,) broadcast to (2, 3): grad a = sum of b per row.
    a = minitorch.tensor([[1.0], [2.0]], requires_grad=True)
    b = minitorch.tensor([1.0, 10.0, 100.0], requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (2, 1) and b.grad.shape == (3,)
    assert_tensor_equals(a.grad, np.array([[111.0], [111.0]]))
    assert_tensor_equals(b.grad, np.array([3.0, 3.0, 3.0]))


@few
@given(st.data(), arrays())
def test_reductions_keep_the_dimension(data: st.DataObject, values: np.ndarray) -> None:
    t = data.draw(permuted_tensor(values, SIMPLE))
    for dim in range(values.ndim):
        assert_tensor_equals(t.sum(dim), values.sum(axis=dim, keepdims=True), atol=1e-7)
        assert_tensor_equals(t.mean(dim), values.mean(axis=dim, keepdims=True), atol=1e-7)
    assert t.sum().shape == (1,)
    np.testing.assert_allclose(t.mean().item(), values.mean(), atol=1e-7)
    # all() is meant for 0/1 tensors such as comparison results.
    assert (t > 0).all().item() == float(np.all(values > 0))
    assert_tensor_equals((t > 0).all(0), np.all(values > 0, axis=0, keepdims=True).astype(float))


@few
@given(st.data(), arrays())
def test_permute_view_contiguous_and_their_gradients(data: st.DataObject, values: np.ndarray) -> None:
    t = data.draw(permuted_tensor(values, SIMPLE))
    order = data.draw(st.permutations(range(values.ndim)))
    assert_tensor_equals(t.permute(*order), values.transpose(order))
    flat = t.contiguous().view(t.size)
    assert_tensor_equals(flat, values.ravel())
    minitorch.grad_check(lambda a: a.permute(*order), t)
    minitorch.grad_check(lambda a: a.contiguous().view(a.size), t)


def test_view_refuses_non_contiguous_and_wrong_sizes() -> None:
    t = minitorch.tensor([[2.0, 3.0, 4.0], [4.0, 5.0, 7.0]])
    with pytest.raises(IndexingError, match="contiguous"):
        t.permute(1, 0).view(6)
    with pytest.raises(IndexingError, match=r"\(2, 3\)"):
        t.view(4)
    assert t.permute(1, 0).contiguous().view(6).shape == (6,)


def test_backward_needs_a_gradient_unless_shape_is_one() -> None:
    t = minitorch.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        (t * 2).backward()
    (t * 2).backward(minitorch.tensor([1.0, 1.0]))
    assert_tensor_equals(t.grad, np.array([2.0, 2.0]))


@few
@given(st.data(), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3))
def test_simple_matmul_matches_numpy_and_finite_differences(data, n, m, k, batch) -> None:
    a = data.draw(arrays((batch, n, m)))
    b = data.draw(arrays((1, m, k)))
    ta, tb = minitorch.tensor(a.tolist()), minitorch.tensor(b.tolist())
    np.testing.assert_allclose((ta @ tb).to_numpy(), a @ b, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose((ta.permute(0, 2, 1).permute(0, 2, 1) @ tb).to_numpy(), a @ b, atol=1e-9)
    minitorch.grad_check(lambda x, y: x @ y, ta, tb)


def test_tensor_constructor_and_bad_input() -> None:
    t = minitorch.tensor([[[2, 3, 4], [4, 5, 7]]])
    assert t.shape == (1, 2, 3) and t[0, 1, 2] == 7.0
    assert minitorch.tensor(np.eye(2)).shape == (2, 2)
    with pytest.raises(ValueError, match="ragged"):
        minitorch.tensor([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="one-element"):
        t.item()
    mixed = minitorch.tensor([1.0, 2.0]) + minitorch.tensor([3.0, 4.0], backend=minitorch.TensorBackend(minitorch.SimpleOps))
    assert_tensor_equals(mixed, np.array([4.0, 6.0]))
    assert_tensor_equals(1.0 / minitorch.tensor([2.0, 4.0]) - 1, np.array([-0.5, -0.75]))
