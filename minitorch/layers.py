"""Module 4: trainable layers (``Module`` subclasses) built on tensor operations.

Weights are initialised uniformly in [-1/sqrt(fan_in), 1/sqrt(fan_in)], the usual scale that
keeps activations from growing or shrinking layer after layer.
"""

from __future__ import annotations

import math

from .fast_conv import conv1d, conv2d
from .module import Module, Parameter
from .tensor import Tensor
from .tensor_functions import rand
from .tensor_ops import SimpleBackend, TensorBackend


def uniform(shape: tuple[int, ...], fan_in: int, backend: TensorBackend) -> Tensor:
    """Uniform values in [-1/sqrt(fan_in), 1/sqrt(fan_in)]."""
    bound = 1.0 / math.sqrt(fan_in)
    return (rand(shape, backend=backend) * 2.0 - 1.0) * bound


class Linear(Module):
    """x @ W + b for x of shape (batch, in_size)."""

    def __init__(self, in_size: int, out_size: int, backend: TensorBackend = SimpleBackend) -> None:
        super().__init__()
        self.weights = Parameter(uniform((in_size, out_size), in_size, backend))
        self.bias = Parameter(uniform((out_size,), in_size, backend))
        self.out_size = out_size

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weights.value + self.bias.value


class Conv1d(Module):
    """Same-width 1-D convolution plus a per-channel bias."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_width: int, backend: TensorBackend = SimpleBackend
    ) -> None:
        super().__init__()
        fan_in = in_channels * kernel_width
        self.weights = Parameter(uniform((out_channels, in_channels, kernel_width), fan_in, backend))
        self.bias = Parameter(uniform((1, out_channels, 1), fan_in, backend))

    def forward(self, x: Tensor) -> Tensor:
        return conv1d(x, self.weights.value) + self.bias.value


class Conv2d(Module):
    """Same-size 2-D convolution (anchored top-left) plus a per-channel bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        backend: TensorBackend = SimpleBackend,
    ) -> None:
        super().__init__()
        kh, kw = kernel
        fan_in = in_channels * kh * kw
        self.weights = Parameter(uniform((out_channels, in_channels, kh, kw), fan_in, backend))
        self.bias = Parameter(uniform((1, out_channels, 1, 1), fan_in, backend))

    def forward(self, x: Tensor) -> Tensor:
        return conv2d(x, self.weights.value) + self.bias.value
