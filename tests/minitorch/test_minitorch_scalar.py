"""Module 1: Scalar autodiff against plain floats and central differences."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitorch
from minitorch import Scalar, ScalarFunction
from minitorch.autodiff import Context, central_difference, topological_sort

from .strategies import few, smooth_floats

ONE_ARG, TWO_ARG, _ = minitorch.MathTestVariable._comp_testing()


@few
@given(smooth_floats)
@pytest.mark.parametrize("fn", ONE_ARG, ids=[name for name, _, _ in ONE_ARG])
def test_one_arg_value_and_derivative(fn, x: float) -> None:
    name, float_fn, scalar_fn = fn
    assert math.isclose(scalar_fn(Scalar(x)).data, float_fn(x), rel_tol=1e-9, abs_tol=1e-9)
    minitorch.derivative_check(scalar_fn, Scalar(x))


@few
@given(smooth_floats, smooth_floats)
@pytest.mark.parametrize("fn", TWO_ARG, ids=[name for name, _, _ in TWO_ARG])
def test_two_arg_value_and_derivative(fn, x: float, y: float) -> None:
    name, float_fn, scalar_fn = fn
    assert math.isclose(scalar_fn(Scalar(x), Scalar(y)).data, float_fn(x, y), rel_tol=1e-9, abs_tol=1e-9)
    minitorch.derivative_check(scalar_fn, Scalar(x), Scalar(y))


def test_derivative_check_catches_a_wrong_backward() -> None:
    class WrongSquare(ScalarFunction):
        @staticmethod
        def forward(ctx: Context, a: float) -> float:
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx: Context, d: float) -> float:
            (a,) = ctx.saved_values
            return d * a  # should be 2 * a * d

    with pytest.raises(AssertionError):
        minitorch.derivative_check(WrongSquare.apply, Scalar(3.0))


def test_central_difference_on_floats() -> None:
    assert math.isclose(central_difference(lambda x, y: x * y * y, 2.0, 3.0, arg=1), 12.0, rel_tol=1e-6)
    assert math.isclose(central_difference(math.exp, 1.0), math.e, rel_tol=1e-6)


def test_shared_subexpression_accumulates_both_paths() -> None:
    # f(x) = (x * x) + (x * x) * x with x used on several paths: f'(x) = 2x + 3x^2.
    x = Scalar(1.5)
    sq = x * x
    out = sq + sq * x
    out.backward()
    assert math.isclose(x.derivative, 2 * 1.5 + 3 * 1.5**2, rel_tol=1e-12)


def test_topological_sort_orders_every_node_before_its_inputs() -> None:
    x, y = Scalar(1.0), Scalar(2.0)
    z = (x * y + x).log()
    order = topological_sort(z)
    position = {v.unique_id: i for i, v in enumerate(order)}
    assert order[0] is z
    for v in order:
        if not v.is_leaf():
            for parent in v.parents:
                assert position[parent.unique_id] > position[v.unique_id]
    assert {x.unique_id, y.unique_id} <= set(position)


def test_chain_rule_yields_a_pair_for_constants_too() -> None:
    y = minitorch.scalar_functions.Mul.apply(4.0, Scalar(2.0))
    pairs = list(y.chain_rule(1.0))
    assert len(pairs) == 2
    assert pairs[0][1] == 2.0 and pairs[1][1] == 4.0


def test_comparisons_return_scalars_with_zero_derivative() -> None:
    a, b = Scalar(1.0), Scalar(2.0)
    assert isinstance(a < b, Scalar) and (a < b).data == 1.0
    assert (a > b).data == 0.0 and (a == Scalar(1.0)).data == 1.0
    (a < b).backward()
    assert a.derivative == 0.0


@few
@given(st.floats(min_value=0.1, max_value=5.0))
def test_sgd_step_moves_against_the_gradient(x0: float) -> None:
    class Square(minitorch.Module):
        def __init__(self) -> None:
            super().__init__()
            self.x = minitorch.Parameter(Scalar(x0))

        def forward(self) -> Scalar:
            return self.x.value * self.x.value

    model = Square()
    opt = minitorch.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    model().backward()
    opt.step()
    assert math.isclose(model.x.value.data, x0 - 0.1 * 2 * x0, rel_tol=1e-12)
