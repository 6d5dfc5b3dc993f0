"""Every scalar and tensor autodiff function's backward against central differences.

The checks live in ``backward_checks.py`` (so the mutation tests can run them against a copy of
the package); here they run against the real ``minitorch``. Unlike ``derivative_check`` and
``grad_check`` (absolute tolerance 1e-2), they use a relative tolerance of 1e-6 at points where
every derivative is of order one, so a backward that returns zero or is off by 0.1% fails.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import minitorch

from .backward_checks import (
    COMPOSITE,
    SCALAR_CASES,
    SCALAR_COMPOSITE,
    SCALAR_SEEDS,
    STEP,
    TENSOR_CASES,
    TENSOR_COMPOSITE,
    case_seed,
    check_coverage,
    check_scalar_function,
    check_tensor_function,
    numeric_gradient,
    scalar_function_names,
    seed_weights,
    tensor_function_names,
)


def test_every_function_has_a_check() -> None:
    assert check_coverage(minitorch) == []
    # ...and no check is filed under a function that does not exist (a rename would hide it).
    assert sorted(SCALAR_CASES) == scalar_function_names(minitorch)
    assert sorted(TENSOR_CASES) == tensor_function_names(minitorch)


@pytest.mark.parametrize("name", [*SCALAR_CASES, COMPOSITE])
def test_scalar_backward(name: str) -> None:
    failures = check_scalar_function(minitorch, name)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", [*TENSOR_CASES, COMPOSITE])
def test_tensor_backward(name: str) -> None:
    failures = check_tensor_function(minitorch, name)
    assert not failures, "\n".join(failures)


# The oracle itself: at the chosen points every derivative that is not identically zero is of
# order one, so a backward returning zeros is at least 0.1 off, 1e5 times the tolerance.


SCALAR_SMOOTH = [n for n, c in SCALAR_CASES.items() if not c.zero_derivative] + [COMPOSITE]
TENSOR_SMOOTH = [n for n, c in TENSOR_CASES.items() if not (c[0].zero_derivative or c[0].no_backward)]
TENSOR_SMOOTH.append(COMPOSITE)


@pytest.mark.parametrize("name", SCALAR_SMOOTH)
def test_scalar_points_have_derivatives_of_order_one(name: str) -> None:
    case = SCALAR_COMPOSITE if name == COMPOSITE else SCALAR_CASES[name]
    for i in range(len(case.points[0])):
        largest = 0.0
        for p, point in enumerate(case.points):
            plus = [v + STEP if j == i else v for j, v in enumerate(point)]
            minus = [v - STEP if j == i else v for j, v in enumerate(point)]
            d = SCALAR_SEEDS[p % len(SCALAR_SEEDS)] * (case.ref(*plus) - case.ref(*minus)) / (2 * STEP)
            assert math.isfinite(d)
            largest = max(largest, abs(d))
        assert largest >= 0.1, f"input {i}: largest derivative {largest}"


@pytest.mark.parametrize("name", TENSOR_SMOOTH)
def test_tensor_points_have_gradients_of_order_one(name: str) -> None:
    cases = TENSOR_COMPOSITE if name == COMPOSITE else TENSOR_CASES[name]
    for k, case in enumerate(cases):
        weights = seed_weights(case_seed(k), case.ref(*case.inputs).shape)
        for i in range(len(case.inputs)):
            grad = numeric_gradient(case.ref, case.inputs, weights, i)
            assert np.all(np.isfinite(grad))
            assert np.abs(grad).max() >= 0.1, f"{case.label}, input {i}: gradient {grad.tolist()}"


def test_comparison_cases_include_equal_and_unequal_pairs() -> None:
    # lt and eq must be seen both true and false, or a forward returning a constant passes.
    for name in ("LT", "EQ"):
        for case in TENSOR_CASES[name]:
            out = case.ref(*case.inputs)
            assert 0.0 < out.mean() < 1.0, case.label
        outs = {SCALAR_CASES[name].ref(*p) for p in SCALAR_CASES[name].points}
        assert outs == {0.0, 1.0}, name


def test_checks_do_not_import_minitorch() -> None:
    # The mutation tests hand the checks a copy of the package; an import of the real one in
    # the checks module would silently test that instead.
    source = Path(__file__).with_name("backward_checks.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0] if node.level == 0 else ".")
    assert "minitorch" not in imported and "." not in imported, imported
