"""Backward passes of every minitorch autodiff function, checked against central differences.

The oracle is independent of minitorch: each case carries a plain ``math``/numpy reference of
the function, the forward of minitorch is compared with it, and the gradient minitorch's
backward produces is compared with central differences of that reference, in float64, with a
relative tolerance (``|backprop - numeric| <= REL_TOL * max(1, |numeric|)``).

The points are chosen where the derivative is of order one (inputs of log, inv and exp in
[0.5, 2] or thereabouts, relu and lt/eq away from their kinks and jumps), so a backward that
returns zero, or a gradient off by a part in a thousand, cannot hide under the tolerance. The
gradient is seeded with random weights rather than ones, so a backward that sends the right
values to the wrong elements (an un-inverted permutation, say) is caught too. Functions whose
derivative is zero wherever it exists (lt, eq) must give exactly zero, and their forward must
be right.

This module imports no minitorch itself: every entry point takes the package as an argument,
so the same checks run against the real package (``test_minitorch_backward.py``) and against
copies with a mutated backward (``test_minitorch_mutation.py``, in a subprocess).
``check_all_backwards(minitorch)`` returns the list of failures, empty when all is well.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

REL_TOL = 1e-6  # backprop against central differences, relative to max(1, |numeric|)
FORWARD_TOL = 1e-12  # minitorch's forward against the reference, relative and absolute
STEP = 1e-5  # central-difference step: truncation ~ STEP**2 and round-off ~ 1e-16 / STEP, both << REL_TOL

# The name of the pseudo-function under which the cases chaining several functions are filed.
COMPOSITE = "composite"


def _close(analytic: float, numeric: float) -> bool:
    return abs(analytic - numeric) <= REL_TOL * max(1.0, abs(numeric))


def _uniform(seed: int, shape: tuple[int, ...], lo: float, hi: float, signed: bool = False) -> np.ndarray:
    """Seeded values with magnitude in [lo, hi], of random sign when ``signed``."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(lo, hi, size=shape)
    if signed:
        values = values * rng.choice([-1.0, 1.0], size=shape)
    return values


def _sigmoid(x: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


# ## Scalar functions


@dataclass
class ScalarCase:
    """A scalar function at fixed points: ``ref`` is the float reference of ``forward``."""

    points: Sequence[tuple[float, ...]]
    ref: Callable[..., float]
    zero_derivative: bool = False
    # Builds the output from leaf Scalars; default: ``<the function>.apply(*leaves)``.
    call: Callable[[ModuleType, list[Any]], Any] | None = None


# d_output seeds cycled over the points: not 1, so a backward that drops d_output is caught.
SCALAR_SEEDS = (1.7, -0.6, 2.3, -1.4)

SCALAR_CASES: dict[str, ScalarCase] = {
    "Add": ScalarCase([(0.7, -1.3), (1.9, 0.6)], lambda a, b: a + b),
    "Mul": ScalarCase([(0.7, -1.3), (1.9, 0.6), (-1.2, -0.8)], lambda a, b: a * b),
    "Inv": ScalarCase([(0.6,), (1.7,), (-1.2,)], lambda a: 1.0 / a),
    "Neg": ScalarCase([(0.8,), (-1.6,)], lambda a: -a),
    "Sigmoid": ScalarCase([(-1.1,), (0.4,), (1.6,)], lambda a: 1.0 / (1.0 + math.exp(-a))),
    "ReLU": ScalarCase([(0.9,), (1.7,), (-0.8,)], lambda a: max(a, 0.0)),
    "Log": ScalarCase([(0.6,), (1.4,), (1.9,)], math.log),
    "Exp": ScalarCase([(0.5,), (1.3,), (-0.7,)], math.exp),
    "LT": ScalarCase(
        [(0.3, 1.1), (1.1, 0.3), (-0.9, -0.4)], lambda a, b: 1.0 if a < b else 0.0, zero_derivative=True
    ),
    "EQ": ScalarCase(
        [(0.7, 0.7), (0.7, 1.2), (-1.5, 0.5)], lambda a, b: 1.0 if a == b else 0.0, zero_derivative=True
    ),
}

# Several functions in one graph, with a variable used twice: derivatives must add up.
SCALAR_COMPOSITE = ScalarCase(
    [(0.8, 1.3), (1.5, 0.6)],
    lambda x, y: math.log(x * y + math.exp(x)) * (1.0 / (1.0 + math.exp(-(y - x)))) - x * x,
    call=lambda mt, v: (v[0] * v[1] + v[0].exp()).log() * (v[1] - v[0]).sigmoid() - v[0] * v[0],
)


def _check_scalar_case(mt: ModuleType, label: str, case: ScalarCase, fn: Any) -> list[str]:
    failures: list[str] = []
    for p, point in enumerate(case.points):
        seed = SCALAR_SEEDS[p % len(SCALAR_SEEDS)]
        where = f"{label} at {point}"
        leaves = [mt.Scalar(v) for v in point]
        out = case.call(mt, leaves) if case.call is not None else fn.apply(*leaves)
        expected = case.ref(*point)
        if not math.isclose(out.data, expected, rel_tol=FORWARD_TOL, abs_tol=FORWARD_TOL):
            failures.append(f"{where}: forward {out.data}, reference {expected}")
            continue
        out.backward(seed)
        for i, leaf in enumerate(leaves):
            got = leaf.derivative
            if got is None:
                failures.append(f"{where}: no derivative reached input {i}")
                continue
            if case.zero_derivative:
                if got != 0.0:
                    failures.append(f"{where}: input {i} got derivative {got}, expected exactly 0")
                continue
            plus = [v + STEP if j == i else v for j, v in enumerate(point)]
            minus = [v - STEP if j == i else v for j, v in enumerate(point)]
            numeric = seed * (case.ref(*plus) - case.ref(*minus)) / (2.0 * STEP)
            if not _close(got, numeric):
                failures.append(f"{where}: input {i} backprop {got}, central difference {numeric}")
    return failures


def subclasses_defined_in(module: ModuleType, base: type) -> list[str]:
    """Names of the subclasses of ``base`` that ``module`` itself defines."""
    return sorted(
        name
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, base)
        and obj is not base
        and obj.__module__ == module.__name__
    )


def scalar_function_names(mt: ModuleType) -> list[str]:
    """Every ScalarFunction subclass defined in ``mt.scalar_functions``."""
    return subclasses_defined_in(mt.scalar_functions, mt.scalar_functions.ScalarFunction)


def check_scalar_function(mt: ModuleType, name: str) -> list[str]:
    """Failures of the scalar function ``name`` (or of the composite case for COMPOSITE)."""
    label = f"scalar {name}"
    try:
        if name == COMPOSITE:
            return _check_scalar_case(mt, label, SCALAR_COMPOSITE, None)
        return _check_scalar_case(mt, label, SCALAR_CASES[name], getattr(mt.scalar_functions, name))
    except Exception as e:  # a broken backward may raise instead of returning wrong numbers
        return [f"{label}: raised {type(e).__name__}: {e}"]


# ## Tensor functions


@dataclass
class TensorCase:
    """One call of a tensor function on fixed inputs.

    ``call`` builds the output from the leaf tensors (``mt`` is the package), ``ref`` is its
    numpy reference. ``layouts`` optionally stores input i permuted by ``layouts[i]`` (a
    non-contiguous leaf). Every input is a leaf that requires a gradient, and every one is checked.
    """

    label: str
    inputs: list[np.ndarray]
    call: Callable[[ModuleType, list[Any]], Any]
    ref: Callable[..., np.ndarray]
    zero_derivative: bool = False
    no_backward: bool = False  # forward only (functions that define no backward)
    layouts: dict[int, tuple[int, ...]] = field(default_factory=dict)


def _fn(name: str) -> Callable[[ModuleType, list[Any]], Any]:
    """``call`` for ``tensor_functions.<name>.apply(*leaves)``."""
    return lambda mt, t: getattr(mt.tensor_functions, name).apply(*t)


def _with_arg(name: str, arg: Sequence[float]) -> Callable[[ModuleType, list[Any]], Any]:
    """``call`` for ``tensor_functions.<name>.apply(leaf, tensor(arg))`` (a dim, order or shape)."""
    return lambda mt, t: getattr(mt.tensor_functions, name).apply(t[0], mt.tensor(list(arg)))


def _elementwise(
    name: str, ref: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, signed: bool, seed: int
) -> list[TensorCase]:
    return [
        TensorCase(f"{name} (2,3)", [_uniform(seed, (2, 3), lo, hi, signed)], _fn(name), ref),
        TensorCase(
            f"{name} (3,2,2) non-contiguous",
            [_uniform(seed + 1, (3, 2, 2), lo, hi, signed)],
            _fn(name),
            ref,
            layouts={0: (2, 0, 1)},
        ),
    ]


def _binary(name: str, ref: Callable[[np.ndarray, np.ndarray], np.ndarray], seed: int) -> list[TensorCase]:
    return [
        TensorCase(
            f"{name} (2,3)x(2,3)",
            [_uniform(seed, (2, 3), 0.5, 2.0, True), _uniform(seed + 1, (2, 3), 0.5, 2.0, True)],
            _fn(name),
            ref,
        ),
        TensorCase(
            f"{name} (2,3)x(3,) broadcast",
            [_uniform(seed + 2, (2, 3), 0.5, 2.0, True), _uniform(seed + 3, (3,), 0.5, 2.0, True)],
            _fn(name),
            ref,
        ),
        TensorCase(
            f"{name} (4,1)x(2,1,3) broadcast both, first non-contiguous",
            [_uniform(seed + 4, (4, 1), 0.5, 2.0, True), _uniform(seed + 5, (2, 1, 3), 0.5, 2.0, True)],
            _fn(name),
            ref,
            layouts={0: (1, 0)},
        ),
    ]


def _comparison(
    name: str, ref: Callable[[np.ndarray, np.ndarray], np.ndarray], seed: int, **kw: Any
) -> list[TensorCase]:
    a = np.round(_uniform(seed, (2, 3), 0.0, 2.0, True), 1)
    b = np.round(_uniform(seed + 1, (2, 3), 0.0, 2.0, True), 1)
    # Values on a 0.1 grid: unequal pairs differ by at least 0.1, far beyond is_close's 0.01.
    b[0, :2] = a[0, :2]  # some equal pairs, so eq and is_close are 1 somewhere
    c = np.round(_uniform(seed + 2, (3,), 0.0, 2.0, True), 1)
    c[1] = a[1, 1]
    return [
        TensorCase(f"{name} (2,3)x(2,3)", [a, b], _fn(name), ref, **kw),
        TensorCase(f"{name} (2,3)x(3,) broadcast", [a, c], _fn(name), ref, **kw),
    ]


_SUM_INPUT = _uniform(31, (2, 3, 4), 0.5, 2.0, True)
_MM_A = _uniform(41, (2, 3), 0.5, 1.5, True)
_MM_B = _uniform(42, (3, 4), 0.5, 1.5, True)

TENSOR_CASES: dict[str, list[TensorCase]] = {
    "Neg": _elementwise("Neg", lambda a: -a, 0.5, 2.0, True, 1),
    "Inv": _elementwise("Inv", lambda a: 1.0 / a, 0.5, 2.0, True, 3),
    "Sigmoid": _elementwise("Sigmoid", _sigmoid, 0.0, 2.0, True, 5),
    "ReLU": _elementwise("ReLU", lambda a: np.maximum(a, 0.0), 0.5, 2.0, True, 7),
    "Log": _elementwise("Log", np.log, 0.5, 2.0, False, 9),
    "Exp": _elementwise("Exp", np.exp, 0.0, 1.5, True, 11),
    "Add": _binary("Add", lambda a, b: a + b, 13),
    "Mul": _binary("Mul", lambda a, b: a * b, 19),
    "Sum": [
        TensorCase(
            f"Sum dim {d} of (2,3,4)",
            [_SUM_INPUT],
            _with_arg("Sum", [d]),
            lambda a, d=d: a.sum(axis=d, keepdims=True),
        )
        for d in range(3)
    ]
    + [
        TensorCase(
            "Sum dim 1 of non-contiguous (3,4)",
            [_uniform(32, (3, 4), 0.5, 2.0, True)],
            _with_arg("Sum", [1]),
            lambda a: a.sum(axis=1, keepdims=True),
            layouts={0: (1, 0)},
        )
    ],
    "LT": _comparison("LT", lambda a, b: (a < b).astype(np.float64), 51, zero_derivative=True),
    "EQ": _comparison("EQ", lambda a, b: (a == b).astype(np.float64), 55, zero_derivative=True),
    "IsClose": _comparison(
        "IsClose", lambda a, b: (np.abs(a - b) < 1e-2).astype(np.float64), 59, no_backward=True
    ),
    "All": [
        TensorCase(
            f"All dim {d} of a 0/1 (3,4)",
            [np.array([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])],
            _with_arg("All", [d]),
            lambda a, d=d: np.prod(a, axis=d, keepdims=True),
            no_backward=True,
        )
        for d in range(2)
    ],
    "Permute": [
        TensorCase(
            f"Permute (2,3,4) by {order}",
            [_uniform(61, (2, 3, 4), 0.5, 2.0, True)],
            _with_arg("Permute", order),
            lambda a, order=order: np.transpose(a, order),
        )
        for order in [(2, 0, 1), (1, 2, 0), (0, 2, 1)]
    ],
    "View": [
        TensorCase(
            f"View (2,3,4) as {shape}",
            [_uniform(71, (2, 3, 4), 0.5, 2.0, True)],
            _with_arg("View", shape),
            lambda a, shape=shape: a.reshape(shape),
        )
        for shape in [(6, 4), (4, 3, 2), (24,)]
    ],
    "Copy": [
        TensorCase("Copy (2,3) contiguous", [_uniform(81, (2, 3), 0.5, 2.0, True)], _fn("Copy"), np.copy),
        TensorCase(
            "Copy (2,3,4) non-contiguous",
            [_uniform(82, (2, 3, 4), 0.5, 2.0, True)],
            _fn("Copy"),
            np.copy,
            layouts={0: (2, 0, 1)},
        ),
    ],
    "MatMul": [
        TensorCase("MatMul (2,3)@(3,4)", [_MM_A, _MM_B], _fn("MatMul"), np.matmul),
        TensorCase(
            "MatMul (3,2)@(2,5), second non-contiguous",
            [_uniform(43, (3, 2), 0.5, 1.5, True), _uniform(44, (2, 5), 0.5, 1.5, True)],
            _fn("MatMul"),
            np.matmul,
            layouts={1: (1, 0)},
        ),
        TensorCase(
            "MatMul (2,2,3)@(3,4), batch broadcast",
            [_uniform(45, (2, 2, 3), 0.5, 1.5, True), _MM_B],
            _fn("MatMul"),
            np.matmul,
        ),
        TensorCase(
            "MatMul (1,3,2)@(2,2,4), batch broadcast",
            [_uniform(46, (1, 3, 2), 0.5, 1.5, True), _uniform(47, (2, 2, 4), 0.5, 1.5, True)],
            _fn("MatMul"),
            np.matmul,
        ),
    ],
}


def _composite_call(mt: ModuleType, t: list[Any]) -> Any:
    tf = mt.tensor_functions
    x, w = t
    h = tf.MatMul.apply(x, w)  # (2,4), used four times below: its gradients must add up
    u = tf.Log.apply(tf.Add.apply(tf.Sigmoid.apply(h), tf.Exp.apply(tf.Neg.apply(h))))
    v = tf.Mul.apply(u, tf.Inv.apply(tf.Add.apply(tf.Exp.apply(h), tf.Sigmoid.apply(h))))
    p = tf.Permute.apply(tf.Add.apply(v, h), mt.tensor([1, 0]))  # (4,2)
    return tf.Sum.apply(tf.Mul.apply(p, p), mt.tensor([0]))  # (1,2)


def _composite_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    h = x @ w
    u = np.log(_sigmoid(h) + np.exp(-h))
    v = u * (1.0 / (np.exp(h) + _sigmoid(h)))
    p = (v + h).T
    return (p * p).sum(axis=0, keepdims=True)


TENSOR_COMPOSITE = [
    TensorCase(
        "composite graph",
        [_uniform(48, (2, 3), 0.3, 0.8, True), _uniform(49, (3, 4), 0.3, 0.8, True)],
        _composite_call,
        _composite_ref,
    )
]


def _leaf(mt: ModuleType, values: np.ndarray, layout: tuple[int, ...] | None) -> Any:
    """A leaf tensor holding ``values``, stored contiguously or permuted by ``layout``."""
    if layout is None:
        t = mt.Tensor.make(values.ravel().copy(), values.shape)
    else:
        stored = np.ascontiguousarray(values.transpose(layout))
        stored_strides = mt.strides_from_shape(stored.shape)
        strides = [0] * values.ndim
        for j, d in enumerate(layout):
            strides[d] = stored_strides[j]
        t = mt.Tensor.make(stored.ravel().copy(), values.shape, tuple(strides))
    t.requires_grad_(True)
    return t


def numeric_gradient(
    ref: Callable[..., np.ndarray], inputs: list[np.ndarray], weights: np.ndarray, i: int
) -> np.ndarray:
    """Central differences of sum(weights * ref(inputs)) in every element of input ``i``."""
    grad = np.zeros_like(inputs[i])
    for idx in np.ndindex(*inputs[i].shape):
        plus = [x.copy() for x in inputs]
        minus = [x.copy() for x in inputs]
        plus[i][idx] += STEP
        minus[i][idx] -= STEP
        grad[idx] = (np.sum(weights * ref(*plus)) - np.sum(weights * ref(*minus))) / (2.0 * STEP)
    return grad


def seed_weights(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """The gradient fed to ``backward`` of a case's output: random weights, none near zero."""
    return _uniform(seed, shape, 0.5, 1.5, True)


def case_seed(k: int) -> int:
    """The weights' seed of the k-th case of a function."""
    return 1000 + k


def _check_tensor_case(mt: ModuleType, case: TensorCase, seed: int) -> list[str]:
    where = f"tensor {case.label}"
    leaves = [_leaf(mt, x, case.layouts.get(i)) for i, x in enumerate(case.inputs)]
    out = case.call(mt, leaves)
    expected = case.ref(*case.inputs)
    if tuple(out.shape) != expected.shape:
        return [f"{where}: forward shape {out.shape}, reference {expected.shape}"]
    got = out.to_numpy()
    if not np.allclose(got, expected, rtol=FORWARD_TOL, atol=FORWARD_TOL):
        return [f"{where}: forward {got.tolist()}, reference {expected.tolist()}"]
    if case.no_backward:
        return []
    weights = seed_weights(seed, expected.shape)
    out.backward(mt.Tensor.make(weights.ravel().copy(), weights.shape))
    failures: list[str] = []
    for i, leaf in enumerate(leaves):
        if leaf.grad is None:
            failures.append(f"{where}: no gradient reached input {i}")
            continue
        if tuple(leaf.grad.shape) != case.inputs[i].shape:
            failures.append(
                f"{where}: input {i} gradient shape {leaf.grad.shape}, expected {case.inputs[i].shape}"
            )
            continue
        grad = leaf.grad.to_numpy()
        numeric = numeric_gradient(case.ref, case.inputs, weights, i)
        if case.zero_derivative:
            # Also at the jumps (equal pairs), where the derivative is undefined: minitorch defines it as 0.
            bad = [idx for idx in np.ndindex(*grad.shape) if grad[idx] != 0.0]
            what = "expected exactly 0; central difference"
        else:
            bad = [idx for idx in np.ndindex(*grad.shape) if not _close(grad[idx], numeric[idx])]
            what = "central difference"
        for idx in bad[:3]:
            failures.append(f"{where}: input {i} element {idx}: backprop {grad[idx]}, {what} {numeric[idx]}")
        if len(bad) > 3:
            failures.append(f"{where}: input {i}: {len(bad) - 3} more wrong elements")
    return failures


def tensor_function_names(mt: ModuleType) -> list[str]:
    """Every Function subclass defined in ``mt.tensor_functions``."""
    return subclasses_defined_in(mt.tensor_functions, mt.tensor_functions.Function)


def check_tensor_function(mt: ModuleType, name: str) -> list[str]:
    """Failures of the tensor function ``name`` (or of the composite case for COMPOSITE)."""
    cases = TENSOR_COMPOSITE if name == COMPOSITE else TENSOR_CASES[name]
    failures: list[str] = []
    for k, case in enumerate(cases):
        try:
            failures += _check_tensor_case(mt, case, seed=case_seed(k))
        except Exception as e:  # a broken backward may raise instead of returning wrong numbers
            failures.append(f"tensor {case.label}: raised {type(e).__name__}: {e}")
    return failures


# ## Everything


def check_coverage(mt: ModuleType) -> list[str]:
    """A failure for every autodiff function of ``mt`` that has no case here."""
    missing = [f"scalar {n}" for n in scalar_function_names(mt) if n not in SCALAR_CASES]
    missing += [f"tensor {n}" for n in tensor_function_names(mt) if n not in TENSOR_CASES]
    return [f"{m}: no gradient check written for this function" for m in missing]


def check_all_backwards(mt: ModuleType) -> list[str]:
    """Every check of this module against the package ``mt``; returns the failures."""
    failures = check_coverage(mt)
    for name in [*SCALAR_CASES, COMPOSITE]:
        failures += check_scalar_function(mt, name)
    for name in [*TENSOR_CASES, COMPOSITE]:
        failures += check_tensor_function(mt, name)
    return failures
