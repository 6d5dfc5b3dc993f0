"""Module 1: optimizers that update a module's parameters from their derivatives."""

from __future__ import annotations

from collections.abc import Sequence

from .module import Parameter
from .scalar import Scalar


class Optimizer:
    def __init__(self, parameters: Sequence[Parameter]) -> None:
        self.parameters = parameters


class SGD(Optimizer):
    """Plain stochastic gradient descent: value <- value - lr * gradient."""

    def __init__(self, parameters: Sequence[Parameter], lr: float = 1.0) -> None:
        super().__init__(parameters)
        self.lr = lr

    def zero_grad(self) -> None:
        """Clear the derivative (Scalars) or gradient (Tensors) of every parameter."""
        for p in self.parameters:
            value = p.value
            if hasattr(value, "derivative"):
                value.derivative = None
            if hasattr(value, "grad"):
                value.grad = None

    def step(self) -> None:
        """Move every parameter that has a gradient one step downhill."""
        for p in self.parameters:
            value = p.value
            if isinstance(value, Scalar):
                if value.derivative is not None:
                    p.update(Scalar(value.data - self.lr * value.derivative))
            elif getattr(value, "grad", None) is not None:
                p.update(value - self.lr * value.grad)
