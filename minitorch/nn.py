"""Module 4: network operations built from tensor functions: pooling, max, softmax, dropout.

Pooling works by ``tile``: a strided reshuffle that puts each pooling window's values in one
trailing dimension, so average pooling is a mean over that dimension and max pooling a max.
"""

from __future__ import annotations

from .autodiff import Context
from .tensor import Tensor
from .tensor_functions import Function, rand


def tile(input: Tensor, kernel: tuple[int, int]) -> tuple[Tensor, int, int]:
    """Regroup (batch, channel, height, width) into (batch, channel, h / kh, w / kw, kh * kw).

    The last dimension holds the kh x kw values of one pooling window.
    """
    batch, channel, height, width = input.shape
    kh, kw = kernel
    if height % kh or width % kw:
        raise ValueError(f"tile: kernel {kernel} does not divide height and width of {input.shape}")
    new_height, new_width = height // kh, width // kw
    windows = (
        input.contiguous()
        .view(batch, channel, new_height, kh, new_width, kw)
        .permute(0, 1, 2, 4, 3, 5)
        .contiguous()
        .view(batch, channel, new_height, new_width, kh * kw)
    )
    return windows, new_height, new_width


def avgpool2d(input: Tensor, kernel: tuple[int, int]) -> Tensor:
    """Mean over each kh x kw window: (batch, channel, h / kh, w / kw)."""
    batch, channel = input.shape[:2]
    windows, new_height, new_width = tile(input, kernel)
    return windows.mean(4).view(batch, channel, new_height, new_width)


def argmax(input: Tensor, dim: int) -> Tensor:
    """One-hot tensor marking the maxima along ``dim`` (every tied maximum is marked)."""
    return input.f.eq_zip(input, input.f.max_reduce(input, dim))


class Max(Function):
    @staticmethod
    def forward(ctx: Context, input: Tensor, dim: Tensor) -> Tensor:
        d = int(dim.item())
        ctx.save_for_backward(input, d)
        return input.f.max_reduce(input, d)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        input, d = ctx.saved_values
        # The gradient flows only to the position(s) that held the maximum.
        return grad_output.f.mul_zip(grad_output, argmax(input, d)), 0.0


def max(input: Tensor, dim: int) -> Tensor:
    """Maximum along ``dim`` (kept with size 1); differentiable through the argmax."""
    return Max.apply(input, input._ensure_tensor(dim))


def _shift(input: Tensor, dim: int) -> Tensor:
    """The max along ``dim`` as a constant: softmax is unchanged by a shift, and this one keeps
    ``exp`` from overflowing."""
    detached = input.detach()
    return detached.f.max_reduce(detached, dim)


def softmax(input: Tensor, dim: int) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim``."""
    e = (input - _shift(input, dim)).exp()
    return e / e.sum(dim)


def logsoftmax(input: Tensor, dim: int) -> Tensor:
    """log(softmax(x)) computed as x - m - log(sum(exp(x - m))) with m the max (log-sum-exp)."""
    shifted = input - _shift(input, dim)
    return shifted - shifted.exp().sum(dim).log()


def maxpool2d(input: Tensor, kernel: tuple[int, int]) -> Tensor:
    """Max over each kh x kw window: (batch, channel, h / kh, w / kw)."""
    batch, channel = input.shape[:2]
    windows, new_height, new_width = tile(input, kernel)
    return max(windows, 4).view(batch, channel, new_height, new_width)


def dropout(input: Tensor, rate: float, ignore: bool = False) -> Tensor:
    """Zero each value with probability ``rate`` (and scale the kept ones by 1 / (1 - rate), so
    the expected value is unchanged); ``ignore=True`` or rate 0 returns the input as is."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout rate must be in [0, 1], got {rate}")
    if ignore or rate == 0.0:
        return input
    if rate == 1.0:
        return input * 0.0
    keep = rand(input.shape, backend=input.backend) > rate
    return input * keep * (1.0 / (1.0 - rate))
