"""Module 0: the scalar math every other layer is built from.

Each function takes and returns Python floats. The fast backend compiles these same functions
with numba's ``njit``, so they use only arithmetic, comparisons, conditional expressions and the
``math`` module: no Python objects, no exceptions.

Names such as ``id``, ``max`` and ``sum`` shadow builtins on purpose: the course tests import
them under these names. Inside the package, import the module (``from . import operators``)
rather than star-importing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

# ## Task 0.1: scalar functions


def mul(x: float, y: float) -> float:
    """x times y."""
    return x * y


def id(x: float) -> float:
    """Return the input unchanged."""
    return x


def add(x: float, y: float) -> float:
    """x plus y."""
    return x + y


def neg(x: float) -> float:
    """Minus x."""
    return -x


def lt(x: float, y: float) -> float:
    """1.0 if x is less than y, else 0.0."""
    return 1.0 if x < y else 0.0


def eq(x: float, y: float) -> float:
    """1.0 if x equals y, else 0.0."""
    return 1.0 if x == y else 0.0


def max(x: float, y: float) -> float:
    """The larger of x and y."""
    return x if x > y else y


def is_close(x: float, y: float) -> float:
    """1.0 when x and y differ by less than 0.01 (the course's absolute tolerance), else 0.0."""
    return 1.0 if abs(x - y) < 1e-2 else 0.0


def sigmoid(x: float) -> float:
    """Logistic function 1 / (1 + e^-x).

    For negative x we use the equivalent e^x / (1 + e^x), so ``exp`` only ever sees a
    non-positive argument and cannot overflow.
    """
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def relu(x: float) -> float:
    """x if x is positive, else 0.0."""
    return x if x > 0.0 else 0.0


def log(x: float) -> float:
    """Natural logarithm (the caller keeps x positive)."""
    return math.log(x)


def exp(x: float) -> float:
    """e to the power x."""
    return math.exp(x)


def inv(x: float) -> float:
    """1 / x."""
    return 1.0 / x


def log_back(x: float, d: float) -> float:
    """d times the derivative of log at x: d / x."""
    return d / x


def inv_back(x: float, d: float) -> float:
    """d times the derivative of 1/x at x: -d / x^2."""
    return -d / (x * x)


def relu_back(x: float, d: float) -> float:
    """d times the derivative of relu at x: d where x > 0, else 0."""
    return d if x > 0.0 else 0.0


def sigmoid_back(x: float, d: float) -> float:
    """d times the derivative of sigmoid at x: d * s * (1 - s)."""
    s = sigmoid(x)
    return d * s * (1.0 - s)


def exp_back(x: float, d: float) -> float:
    """d times the derivative of exp at x."""
    return d * math.exp(x)


# ## Task 0.3: higher-order helpers (the course's curried signatures)


def map(fn: Callable[[float], float]) -> Callable[[Iterable[float]], list[float]]:
    """Lift a one-argument function to one that applies it to every element of a list."""

    def apply(ls: Iterable[float]) -> list[float]:
        return [fn(x) for x in ls]

    return apply


def zipWith(
    fn: Callable[[float, float], float],
) -> Callable[[Iterable[float], Iterable[float]], list[float]]:
    """Lift a two-argument function to one that combines two lists element by element."""

    def apply(ls1: Iterable[float], ls2: Iterable[float]) -> list[float]:
        return [fn(x, y) for x, y in zip(ls1, ls2)]

    return apply


def reduce(fn: Callable[[float, float], float], start: float) -> Callable[[Iterable[float]], float]:
    """Lift a two-argument function to a fold over a list, starting from ``start``."""

    def apply(ls: Iterable[float]) -> float:
        total = start
        for x in ls:
            total = fn(total, x)
        return total

    return apply


def negList(ls: Iterable[float]) -> list[float]:
    """Negate every element."""
    return map(neg)(ls)


def addLists(ls1: Iterable[float], ls2: Iterable[float]) -> list[float]:
    """Element-wise sum of two lists of equal length."""
    return zipWith(add)(ls1, ls2)


def sum(ls: Iterable[float]) -> float:
    """Sum of a list (0.0 for an empty list)."""
    return reduce(add, 0.0)(ls)


def prod(ls: Iterable[float]) -> float:
    """Product of a list (1.0 for an empty list); also used on shape tuples."""
    return reduce(mul, 1.0)(ls)
