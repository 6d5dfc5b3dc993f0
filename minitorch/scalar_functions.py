"""Module 1: differentiable functions of floats, the building blocks of ``Scalar`` arithmetic.

Each subclass gives a static ``forward`` on raw floats and a static ``backward`` returning the
derivative with respect to each input (times the incoming derivative). ``apply`` does the
bookkeeping: unwrap inputs, run forward, and record the history the backward pass will follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import operators
from .autodiff import Context

if TYPE_CHECKING:
    from .scalar import Scalar


def wrap_tuple(x: Any) -> tuple[Any, ...]:
    """Turn a single value into a 1-tuple; leave tuples alone."""
    if isinstance(x, tuple):
        return x
    return (x,)


class ScalarFunction:
    """Base class; never instantiated. Subclasses define ``forward`` and ``backward``."""

    @classmethod
    def _backward(cls, ctx: Context, d_out: float) -> tuple[float, ...]:
        return wrap_tuple(cls.backward(ctx, d_out))  # type: ignore[attr-defined]

    @classmethod
    def _forward(cls, ctx: Context, *inps: float) -> float:
        return cls.forward(ctx, *inps)  # type: ignore[attr-defined]

    @classmethod
    def apply(cls, *vals: Any) -> Scalar:
        """Run the function on Scalars or plain numbers and record how the result was made."""
        from .scalar import Scalar, ScalarHistory

        scalars = [v if isinstance(v, Scalar) else Scalar(float(v)) for v in vals]
        ctx = Context(no_grad=False)
        result = cls._forward(ctx, *[s.data for s in scalars])
        return Scalar(float(result), ScalarHistory(cls, ctx, scalars))


class Add(ScalarFunction):
    @staticmethod
    def forward(ctx: Context, a: float, b: float) -> float:
        return operators.add(a, b)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> tuple[float, float]:
        return d_output, d_output


class Log(ScalarFunction):
    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        ctx.save_for_backward(a)
        return operators.log(a)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (a,) = ctx.saved_values
        return operators.log_back(a, d_output)


class Mul(ScalarFunction):
    @staticmethod
    def forward(ctx: Context, a: float, b: float) -> float:
        ctx.save_for_backward(a, b)
        return operators.mul(a, b)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> tuple[float, float]:
        a, b = ctx.saved_values
        return d_output * b, d_output * a


class Inv(ScalarFunction):
    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        ctx.save_for_backward(a)
        return operators.inv(a)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (a,) = ctx.saved_values
        return operators.inv_back(a, d_output)


class Neg(ScalarFunction):
    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        return operators.neg(a)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        return -d_output


class Sigmoid(ScalarFunction):
    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        s = operators.sigmoid(a)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (s,) = ctx.saved_values
        return d_output * s * (1.0 - s)


class ReLU(ScalarFunction):
    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        ctx.save_for_backward(a)
        return operators.relu(a)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (a,) = ctx.saved_values
        return operators.relu_back(a, d_output)


class Exp(ScalarFunction):
    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        e = operators.exp(a)
        ctx.save_for_backward(e)
        return e

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (e,) = ctx.saved_values
        return d_output * e


class LT(ScalarFunction):
    """Step function: derivative zero almost everywhere."""

    @staticmethod
    def forward(ctx: Context, a: float, b: float) -> float:
        return operators.lt(a, b)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> tuple[float, float]:
        return 0.0, 0.0


class EQ(ScalarFunction):
    """Indicator function: derivative zero almost everywhere."""

    @staticmethod
    def forward(ctx: Context, a: float, b: float) -> float:
        return operators.eq(a, b)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> tuple[float, float]:
        return 0.0, 0.0
