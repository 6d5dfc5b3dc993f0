"""Module 0: the catalogue of test functions the course tests are generated from.

``MathTest`` holds each function written with plain floats and ``operators``;
``MathTestVariable`` rewrites the few that must use methods on autodiff values (``Scalar`` or
``Tensor``). Tests pair them by name order via ``_comp_testing`` and compare the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import operators

NamedFn = tuple[str, Callable[..., Any]]


class MathTest:
    """One-argument, two-argument (names end in ``2``) and reduction (``red``) functions."""

    @staticmethod
    def neg(a: Any) -> Any:
        return -a

    @staticmethod
    def addConstant(a: Any) -> Any:
        return 5 + a

    @staticmethod
    def square(a: Any) -> Any:
        return a * a

    @staticmethod
    def cube(a: Any) -> Any:
        return a * a * a

    @staticmethod
    def subConstant(a: Any) -> Any:
        return a - 5

    @staticmethod
    def multConstant(a: Any) -> Any:
        return 5 * a

    @staticmethod
    def div(a: Any) -> Any:
        return a / 5

    @staticmethod
    def inv(a: Any) -> Any:
        return operators.inv(a + 3.5)

    @staticmethod
    def sig(a: Any) -> Any:
        return operators.sigmoid(a)

    @staticmethod
    def log(a: Any) -> Any:
        return operators.log(a + 100000)

    @staticmethod
    def relu(a: Any) -> Any:
        return operators.relu(a + 5.5)

    @staticmethod
    def exp(a: Any) -> Any:
        return operators.exp(a - 200)

    @staticmethod
    def explog(a: Any) -> Any:
        return operators.log(a + 100000) + operators.exp(a - 200)

    @staticmethod
    def add2(a: Any, b: Any) -> Any:
        return a + b

    @staticmethod
    def mul2(a: Any, b: Any) -> Any:
        return a * b

    @staticmethod
    def div2(a: Any, b: Any) -> Any:
        return a / (b + 5.5)

    @staticmethod
    def gt2(a: Any, b: Any) -> Any:
        return operators.lt(b, a + 1.2)

    @staticmethod
    def lt2(a: Any, b: Any) -> Any:
        return operators.lt(a + 1.2, b)

    @staticmethod
    def eq2(a: Any, b: Any) -> Any:
        return operators.eq(a, (b + 5.5))

    @staticmethod
    def sum_red(a: Iterable[float]) -> Any:
        return operators.sum(a)

    @staticmethod
    def mean_red(a: Iterable[float]) -> Any:
        values = list(a)
        return operators.sum(values) / float(len(values))

    @staticmethod
    def mean_full_red(a: Iterable[float]) -> Any:
        values = list(a)
        return operators.sum(values) / float(len(values))

    @staticmethod
    def complex(a: Any) -> Any:
        inner = operators.relu(operators.relu(a * 10 + 7) * 6 + 5) * 10
        return operators.log(operators.sigmoid(inner)) / 50

    @classmethod
    def _tests(cls) -> tuple[list[NamedFn], list[NamedFn], list[NamedFn]]:
        """Split the public functions (in ``dir`` order) into one-arg, two-arg and reductions."""
        one_arg, two_arg, reductions = [], [], []
        for name in dir(MathTest):
            if name.startswith("_") or not callable(getattr(MathTest, name)):
                continue
            fn = getattr(cls, name)
            if name.endswith("_red"):
                reductions.append((name, fn))
            elif name.endswith("2"):
                two_arg.append((name, fn))
            else:
                one_arg.append((name, fn))
        return one_arg, two_arg, reductions

    @classmethod
    def _comp_testing(cls) -> tuple[list[tuple[str, Callable, Callable]], ...]:
        """Pair this class's functions with ``MathTest``'s: (name, float_fn, variable_fn)."""
        float_groups = MathTest._tests()
        variable_groups = cls._tests()
        return tuple(
            [(name, float_fn, variable_fn) for (name, float_fn), (_, variable_fn) in zip(fg, vg)]
            for fg, vg in zip(float_groups, variable_groups)
        )


class MathTestVariable(MathTest):
    """The same catalogue for autodiff values, using their methods instead of ``operators``."""

    @staticmethod
    def inv(a: Any) -> Any:
        return 1.0 / (a + 3.5)

    @staticmethod
    def sig(x: Any) -> Any:
        return x.sigmoid()

    @staticmethod
    def log(x: Any) -> Any:
        return (x + 100000).log()

    @staticmethod
    def relu(x: Any) -> Any:
        return (x + 5.5).relu()

    @staticmethod
    def exp(a: Any) -> Any:
        return (a - 200).exp()

    @staticmethod
    def explog(a: Any) -> Any:
        return (a + 100000).log() + (a - 200).exp()

    @staticmethod
    def sum_red(a: Any) -> Any:
        return a.sum(0)

    @staticmethod
    def mean_red(a: Any) -> Any:
        return a.mean(0)

    @staticmethod
    def mean_full_red(a: Any) -> Any:
        return a.mean()

    @staticmethod
    def eq2(a: Any, b: Any) -> Any:
        return a == (b + 5.5)

    @staticmethod
    def gt2(a: Any, b: Any) -> Any:
        return a + 1.2 > b

    @staticmethod
    def lt2(a: Any, b: Any) -> Any:
        return a + 1.2 < b

    @staticmethod
    def complex(a: Any) -> Any:
        return (((a * 10 + 7).relu() * 6 + 5).relu() * 10).sigmoid().log() / 50
