"""Module 4: 1-D and 2-D convolution as numba-parallel kernels with autodiff.

Shapes (the course's convention): conv1d maps input (batch, in_channels, width) and weight
(out_channels, in_channels, k) to (batch, out_channels, width); conv2d is the same with
(height, width). The kernel is anchored at the top-left: output position x sums
``input[x + t] * weight[t]``, and input positions past the edge count as zero.

One kernel serves forward and backward. With ``reverse=True`` it is anchored at the right
instead (``input[x - t]``), which is exactly what the gradient with respect to the input needs.
The gradient with respect to the weight is again a forward convolution, of the input with the
output gradient, after swapping the batch and channel axes.

The kernels read raw storage, so they accept tensors from any CPU backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from numba import njit, prange

from .autodiff import Context
from .tensor_data import Shape, Storage, Strides
from .tensor_functions import Function

if TYPE_CHECKING:
    from .tensor import Tensor


def _tensor_conv1d(
    out: Storage,
    out_shape: Shape,
    out_strides: Strides,
    out_size: int,
    input: Storage,
    input_shape: Shape,
    input_strides: Strides,
    weight: Storage,
    weight_shape: Shape,
    weight_strides: Strides,
    reverse: bool,
) -> None:
    """out[b, o, x] = sum over c, t of input[b, c, x ± t] * weight[o, c, t] (+ if not reverse)."""
    _, out_channels, out_width = out_shape[0], out_shape[1], out_shape[2]
    in_channels, width = input_shape[1], input_shape[2]
    k_width = weight_shape[2]
    s0, s1, s2 = input_strides[0], input_strides[1], input_strides[2]
    w0, w1, w2 = weight_strides[0], weight_strides[1], weight_strides[2]
    for i in prange(out_size):
        b = i // (out_channels * out_width)
        o = (i // out_width) % out_channels
        x = i % out_width
        total = 0.0
        for c in range(in_channels):
            for t in range(k_width):
                pos = x - t if reverse else x + t
                if 0 <= pos < width:
                    total += input[b * s0 + c * s1 + pos * s2] * weight[o * w0 + c * w1 + t * w2]
        out[b * out_strides[0] + o * out_strides[1] + x * out_strides[2]] = total


tensor_conv1d = njit(parallel=True, fastmath=True)(_tensor_conv1d)


class Conv1dFun(Function):
    @staticmethod
    def forward(ctx: Context, input: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(input, weight)
        batch, in_channels, width = _check_shapes("conv1d", input, weight, 3)
        out = input.zeros((batch, weight.shape[0], width))
        tensor_conv1d(*out.tuple(), out.size, *input.tuple(), *weight.tuple(), False)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        input, weight = ctx.saved_values
        batch, in_channels, width = input.shape
        out_channels, _, k_width = weight.shape
        # d input: right-anchored convolution of the gradient with the channel-swapped weight.
        grad_input = input.zeros((batch, in_channels, width))
        swapped_weight = weight.permute(1, 0, 2)
        tensor_conv1d(
            *grad_input.tuple(), grad_input.size, *grad_output.tuple(), *swapped_weight.tuple(), True
        )
        # d weight[o, c, t] = sum over b, x of grad[b, o, x] * input[b, c, x + t].
        grad_weight = input.zeros((in_channels, out_channels, k_width))
        tensor_conv1d(
            *grad_weight.tuple(),
            grad_weight.size,
            *input.permute(1, 0, 2).tuple(),
            *grad_output.permute(1, 0, 2).tuple(),
            False,
        )
        return grad_input, grad_weight.permute(1, 0, 2)


conv1d = Conv1dFun.apply


def _tensor_conv2d(
    out: Storage,
    out_shape: Shape,
    out_strides: Strides,
    out_size: int,
    input: Storage,
    input_shape: Shape,
    input_strides: Strides,
    weight: Storage,
    weight_shape: Shape,
    weight_strides: Strides,
    reverse: bool,
) -> None:
    """out[b, o, y, x] = sum over c, u, v of input[b, c, y ± u, x ± v] * weight[o, c, u, v]."""
    out_channels, out_height, out_width = out_shape[1], out_shape[2], out_shape[3]
    in_channels, height, width = input_shape[1], input_shape[2], input_shape[3]
    k_height, k_width = weight_shape[2], weight_shape[3]
    s0, s1, s2, s3 = input_strides[0], input_strides[1], input_strides[2], input_strides[3]
    w0, w1, w2, w3 = weight_strides[0], weight_strides[1], weight_strides[2], weight_strides[3]
    for i in prange(out_size):
        b = i // (out_channels * out_height * out_width)
        o = (i // (out_height * out_width)) % out_channels
        y = (i // out_width) % out_height
        x = i % out_width
        total = 0.0
        for c in range(in_channels):
            for u in range(k_height):
                row = y - u if reverse else y + u
                if row < 0 or row >= height:
                    continue
                for v in range(k_width):
                    col = x - v if reverse else x + v
                    if 0 <= col < width:
                        total += (
                            input[b * s0 + c * s1 + row * s2 + col * s3]
                            * weight[o * w0 + c * w1 + u * w2 + v * w3]
                        )
        out[b * out_strides[0] + o * out_strides[1] + y * out_strides[2] + x * out_strides[3]] = total


tensor_conv2d = njit(parallel=True, fastmath=True)(_tensor_conv2d)


class Conv2dFun(Function):
    @staticmethod
    def forward(ctx: Context, input: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(input, weight)
        batch, in_channels, height, width = _check_shapes("conv2d", input, weight, 4)
        out = input.zeros((batch, weight.shape[0], height, width))
        tensor_conv2d(*out.tuple(), out.size, *input.tuple(), *weight.tuple(), False)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        input, weight = ctx.saved_values
        batch, in_channels, height, width = input.shape
        out_channels, _, k_height, k_width = weight.shape
        grad_input = input.zeros((batch, in_channels, height, width))
        swapped_weight = weight.permute(1, 0, 2, 3)
        tensor_conv2d(
            *grad_input.tuple(), grad_input.size, *grad_output.tuple(), *swapped_weight.tuple(), True
        )
        grad_weight = input.zeros((in_channels, out_channels, k_height, k_width))
        tensor_conv2d(
            *grad_weight.tuple(),
            grad_weight.size,
            *input.permute(1, 0, 2, 3).tuple(),
            *grad_output.permute(1, 0, 2, 3).tuple(),
            False,
        )
        return grad_input, grad_weight.permute(1, 0, 2, 3)


conv2d = Conv2dFun.apply


def _check_shapes(name: str, input: Tensor, weight: Tensor, dims: int) -> tuple[int, ...]:
    """Validate conv operand shapes; return the input shape."""
    if input.dims != dims or weight.dims != dims:
        raise ValueError(f"{name} needs {dims}-D input and weight, got {input.shape} and {weight.shape}")
    if input.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{name}: input has {input.shape[1]} channels but weight expects {weight.shape[1]} "
            f"(input {input.shape}, weight {weight.shape})"
        )
    return tuple(int(s) for s in input.shape)
