"""Module 1: ``Scalar``, a float that remembers how it was computed.

Every arithmetic operation goes through a ``ScalarFunction`` and returns a new ``Scalar`` whose
``history`` names the function, its saved context and its inputs. ``backward()`` hands that
graph to ``autodiff.backpropagate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .autodiff import Context, Variable, backpropagate, central_difference
from .scalar_functions import EQ, LT, Add, Exp, Inv, Log, Mul, Neg, ReLU, ScalarFunction, Sigmoid

ScalarLike = Any  # a Scalar or a plain number


@dataclass
class ScalarHistory:
    """How a Scalar was made: the function, its context and its inputs (empty for a leaf)."""

    last_fn: type[ScalarFunction] | None = None
    ctx: Context | None = None
    inputs: Sequence[Scalar] = field(default_factory=tuple)


_next_scalar_id = 0

# Default for ``back``: "give me a fresh leaf history". Passing None instead makes a constant.
_NEW_LEAF: Any = object()


class Scalar:
    """A float with a derivative slot and a computation history."""

    def __init__(
        self,
        v: float,
        back: ScalarHistory | None = _NEW_LEAF,
        name: str | None = None,
    ) -> None:
        global _next_scalar_id
        _next_scalar_id += 1
        self._unique_id = _next_scalar_id
        self.data = float(v)
        self.history: ScalarHistory | None = ScalarHistory() if back is _NEW_LEAF else back
        self.derivative: float | None = None
        self.name = name if name is not None else str(self._unique_id)

    def __repr__(self) -> str:
        return f"Scalar({self.data})"

    # Arithmetic: every operator builds a new node in the graph.
    def __mul__(self, b: ScalarLike) -> Scalar:
        return Mul.apply(self, b)

    def __rmul__(self, b: ScalarLike) -> Scalar:
        return Mul.apply(b, self)

    def __truediv__(self, b: ScalarLike) -> Scalar:
        return Mul.apply(self, Inv.apply(b))

    def __rtruediv__(self, b: ScalarLike) -> Scalar:
        return Mul.apply(b, Inv.apply(self))

    def __add__(self, b: ScalarLike) -> Scalar:
        return Add.apply(self, b)

    def __radd__(self, b: ScalarLike) -> Scalar:
        return Add.apply(b, self)

    def __sub__(self, b: ScalarLike) -> Scalar:
        return Add.apply(self, Neg.apply(b))

    def __rsub__(self, b: ScalarLike) -> Scalar:
        return Add.apply(b, Neg.apply(self))

    def __neg__(self) -> Scalar:
        return Neg.apply(self)

    def __lt__(self, b: ScalarLike) -> Scalar:
        return LT.apply(self, b)

    def __gt__(self, b: ScalarLike) -> Scalar:
        return LT.apply(b, self)

    def __eq__(self, b: ScalarLike) -> Scalar:  # type: ignore[override]
        return EQ.apply(self, b)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        return bool(self.data)

    def log(self) -> Scalar:
        return Log.apply(self)

    def exp(self) -> Scalar:
        return Exp.apply(self)

    def sigmoid(self) -> Scalar:
        return Sigmoid.apply(self)

    def relu(self) -> Scalar:
        return ReLU.apply(self)

    # The Variable protocol used by backpropagate.
    @property
    def unique_id(self) -> int:
        return self._unique_id

    def accumulate_derivative(self, x: Any) -> None:
        """Add ``x`` to this leaf's derivative."""
        assert self.is_leaf(), "only leaf variables accumulate derivatives"
        if self.derivative is None:
            self.derivative = 0.0
        self.derivative += x

    def is_leaf(self) -> bool:
        """True for a variable created by the user (history without a function)."""
        return self.history is not None and self.history.last_fn is None

    def is_constant(self) -> bool:
        """True when no history is kept, so no derivative flows here."""
        return self.history is None

    @property
    def parents(self) -> Iterable[Variable]:
        assert self.history is not None
        return self.history.inputs

    def chain_rule(self, d_output: Any) -> Iterable[tuple[Variable, Any]]:
        """One (input, d output / d input) pair per input of the function that made this."""
        history = self.history
        assert history is not None and history.last_fn is not None and history.ctx is not None
        local = history.last_fn._backward(history.ctx, d_output)
        assert len(local) == len(history.inputs), f"{history.last_fn} returned {len(local)} derivatives"
        return list(zip(history.inputs, local))

    def backward(self, d_output: float | None = None) -> None:
        """Backpropagate from this value (seed derivative 1.0 by default)."""
        backpropagate(self, 1.0 if d_output is None else d_output)


def derivative_check(f: Any, *scalars: Scalar) -> None:
    """Compare backprop derivatives of ``f`` with central differences (rtol = atol = 1e-2)."""
    out = f(*scalars)
    out.backward()
    for i, x in enumerate(scalars):
        check = central_difference(f, *scalars, arg=i)
        assert x.derivative is not None, f"no derivative reached argument {i}"
        np.testing.assert_allclose(
            x.derivative,
            check.data,
            1e-2,
            1e-2,
            err_msg=f"Derivative check failed for argument {i}: {[s.data for s in scalars]}, "
            f"backprop {x.derivative}, central difference {check.data}",
        )
