"""Module 0: operators, list helpers, Module/Parameter, the MathTest catalogue and data sets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitorch
from minitorch import operators

from .strategies import few, small_floats


@few
@given(small_floats, small_floats)
def test_arithmetic_matches_python(x: float, y: float) -> None:
    assert operators.mul(x, y) == x * y
    assert operators.add(x, y) == x + y
    assert operators.neg(x) == -x
    assert operators.id(x) == x
    assert operators.max(x, y) == max(x, y)
    assert operators.lt(x, y) == (1.0 if x < y else 0.0)
    assert operators.eq(x, y) == (1.0 if x == y else 0.0)
    assert operators.relu(x) == (x if x > 0 else 0.0)


def test_is_close_uses_absolute_tolerance_of_one_hundredth() -> None:
    assert operators.is_close(1.0, 1.0099)
    assert not operators.is_close(1.0, 1.0101)
    assert operators.is_close(1000.0, 1000.009)


@few
@given(st.floats(min_value=-1000, max_value=1000, allow_nan=False))
def test_sigmoid_bounds_symmetry_and_stability(x: float) -> None:
    s = operators.sigmoid(x)
    assert 0.0 <= s <= 1.0
    assert math.isclose(1.0 - s, operators.sigmoid(-x), abs_tol=1e-12)
    # Reference formula in the form that is exact for moderate x.
    if abs(x) < 30:
        assert math.isclose(s, 1.0 / (1.0 + math.exp(-x)), rel_tol=1e-12)


def test_sigmoid_does_not_overflow_for_large_negative_input() -> None:
    assert operators.sigmoid(-1e6) == 0.0
    assert operators.sigmoid(1e6) == 1.0
    assert operators.sigmoid(0.0) == 0.5


@few
@given(small_floats, small_floats, small_floats)
def test_lt_is_transitive_and_mul_symmetric_and_distributive(a: float, b: float, c: float) -> None:
    if operators.lt(a, b) and operators.lt(b, c):
        assert operators.lt(a, c)
    assert operators.mul(a, b) == operators.mul(b, a)
    assert math.isclose(
        operators.mul(c, operators.add(a, b)),
        operators.add(operators.mul(c, a), operators.mul(c, b)),
        rel_tol=1e-9,
        abs_tol=1e-9,
    )


@pytest.mark.parametrize(
    ("back", "fn", "x"),
    [
        (operators.log_back, operators.log, 2.5),
        (operators.inv_back, operators.inv, -1.7),
        (operators.relu_back, operators.relu, 3.0),
        (operators.relu_back, operators.relu, -3.0),
        (operators.sigmoid_back, operators.sigmoid, 0.7),
        (operators.exp_back, operators.exp, 1.3),
    ],
)
def test_backward_helpers_match_finite_differences(back, fn, x: float) -> None:
    h = 1e-6
    numeric = (fn(x + h) - fn(x - h)) / (2 * h)
    assert math.isclose(back(x, 1.0), numeric, rel_tol=1e-5, abs_tol=1e-8)
    assert math.isclose(back(x, 3.0), 3.0 * numeric, rel_tol=1e-5, abs_tol=1e-8)


@few
@given(st.lists(small_floats), st.lists(small_floats))
def test_list_helpers(ls1: list[float], ls2: list[float]) -> None:
    n = min(len(ls1), len(ls2))
    a, b = ls1[:n], ls2[:n]
    assert operators.addLists(a, b) == [x + y for x, y in zip(a, b)]
    assert operators.negList(a) == [-x for x in a]
    # sum distributes over concatenation; the empty sum is 0 and the empty product 1.
    assert math.isclose(operators.sum(a + b), operators.sum(a) + operators.sum(b), abs_tol=1e-6)
    assert operators.sum([]) == 0.0
    assert operators.prod([]) == 1.0
    assert operators.prod((2, 3, 4)) == 24


def test_higher_order_helpers_are_curried() -> None:
    assert operators.map(operators.neg)([1.0, -2.0]) == [-1.0, 2.0]
    assert operators.zipWith(operators.mul)([1.0, 2.0], [3.0, 4.0]) == [3.0, 8.0]
    assert operators.reduce(operators.max, -1e9)([3.0, 7.0, 5.0]) == 7.0


class Leaf(minitorch.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = minitorch.Parameter(1.0)


class Tree(minitorch.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Leaf()
        self.b = minitorch.Module()
        self.b.c = Leaf()
        self.bias = minitorch.Parameter(2.0)
        self.plain = 3

    def forward(self, x: float) -> float:
        return x + self.bias.value


def test_module_tree_names_training_flags_and_forward() -> None:
    tree = Tree()
    named = dict(tree.named_parameters())
    assert set(named) == {"bias", "a.w", "b.c.w"}
    assert len(tree.parameters()) == 3
    assert tree.plain == 3 and "plain" not in named
    tree.eval()
    assert not tree.training and not tree.a.training and not tree.b.c.training
    tree.train()
    assert tree.b.c.training
    assert tree(1.0) == 3.0
    assert "Leaf" in repr(tree)
    p = tree.add_parameter("extra", 5.0)
    assert dict(tree.named_parameters())["extra"] is p and p.name == "extra"
    with pytest.raises(NotImplementedError):
        minitorch.Module()()


def test_parameter_switches_on_gradients_and_names_the_value() -> None:
    t = minitorch.tensor([1.0, 2.0])
    p = minitorch.Parameter(t, "weights")
    assert t.requires_grad() and t.name == "weights"
    t2 = minitorch.tensor([3.0])
    p.update(t2)
    assert p.value is t2 and t2.requires_grad()


def test_math_test_catalogue_is_complete_and_paired() -> None:
    one, two, red = minitorch.MathTest._tests()
    assert len(one) == 14 and len(two) == 6 and len(red) == 3
    pairs = minitorch.MathTestVariable._comp_testing()
    for group in pairs:
        for name, float_fn, var_fn in group:
            assert float_fn.__name__ == name and var_fn.__name__ == name
    # The Scalar versions compute the same values as the float versions.
    for name, float_fn, var_fn in pairs[0]:
        assert math.isclose(var_fn(minitorch.Scalar(1.3)).data, float_fn(1.3), rel_tol=1e-9, abs_tol=1e-12), name


@pytest.mark.parametrize("name", ["Simple", "Diag", "Split", "Xor", "Circle", "Spiral"])
def test_datasets_label_by_their_rule(name: str) -> None:
    graph = minitorch.datasets[name](40)
    assert graph.N == len(graph.X) == len(graph.y) == 40
    assert set(graph.y) <= {0, 1}
    for (x1, x2), label in zip(graph.X, graph.y):
        assert 0.0 <= x1 <= 1.0 and 0.0 <= x2 <= 1.0
        rule = {
            "Simple": x1 < 0.5,
            "Diag": x1 + x2 < 0.5,
            "Split": x1 < 0.2 or x1 > 0.8,
            "Xor": (x1 > 0.5) != (x2 > 0.5),
            "Circle": (x1 - 0.5) ** 2 + (x2 - 0.5) ** 2 > 0.1,
            "Spiral": label == 1,
        }[name]
        if name != "Spiral":
            assert label == int(rule)
    if name == "Spiral":
        assert graph.y.count(0) == graph.y.count(1) == 20
