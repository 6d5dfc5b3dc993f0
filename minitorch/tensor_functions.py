"""Module 2: differentiable tensor functions, and the constructors that make tensors.

Each ``Function`` subclass has a static ``forward`` that computes with the backend's kernels
and a static ``backward`` that returns one gradient per input. ``Function.apply`` does the
bookkeeping: forward sees detached inputs (so no graph is built inside it), and a ``History`` is
recorded on the output only when some input requires a gradient.

Arguments that are not differentiable (a dimension, a permutation, a shape) are passed as small
tensors, and their backward returns 0.0.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np

from . import operators
from .autodiff import Context
from .tensor_data import IndexingError
from .tensor_ops import SimpleBackend, TensorBackend

if TYPE_CHECKING:
    from .tensor import Tensor
    from .tensor_data import UserIndex, UserShape


def wrap_tuple(x: Any) -> tuple[Any, ...]:
    """Turn a single value into a 1-tuple; leave tuples alone."""
    if isinstance(x, tuple):
        return x
    return (x,)


class Function:
    """Base class; never instantiated. Subclasses define ``forward`` and ``backward``."""

    @classmethod
    def _backward(cls, ctx: Context, grad_out: Tensor) -> tuple[Any, ...]:
        return wrap_tuple(cls.backward(ctx, grad_out))  # type: ignore[attr-defined]

    @classmethod
    def _forward(cls, ctx: Context, *inps: Tensor) -> Tensor:
        return cls.forward(ctx, *inps)  # type: ignore[attr-defined]

    @classmethod
    def apply(cls, *vals: Tensor) -> Tensor:
        """Run forward on detached inputs; record history if any input needs a gradient."""
        from .tensor import History, Tensor

        need_grad = any(v.requires_grad() for v in vals)
        ctx = Context(not need_grad)
        result = cls._forward(ctx, *[v.detach() for v in vals])
        back = History(cls, ctx, vals) if need_grad else None
        return Tensor(result._tensor, back, backend=result.backend)


def _dim(t: Tensor) -> int:
    """A dimension argument passed as a one-element tensor."""
    return int(t.item())


class Neg(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        return t1.f.neg_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        return grad_output.f.neg_map(grad_output)


class Inv(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.inv_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.inv_back_zip(t1, grad_output)


class Add(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor, t2: Tensor) -> Tensor:
        return t1.f.add_zip(t1, t2)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        # Both inputs get the full gradient; Tensor.chain_rule sums it back to each input's shape.
        return grad_output, grad_output


class Mul(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return a.f.mul_zip(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a, b = ctx.saved_values
        return grad_output.f.mul_zip(grad_output, b), grad_output.f.mul_zip(grad_output, a)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        s = t1.f.sigmoid_map(t1)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (s,) = ctx.saved_values
        f = grad_output.f
        # d sigmoid = s * (1 - s) = s - s*s
        local = f.add_zip(s, f.neg_map(f.mul_zip(s, s)))
        return f.mul_zip(grad_output, local)


class ReLU(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.relu_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.relu_back_zip(t1, grad_output)


class Log(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.log_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.log_back_zip(t1, grad_output)


class Exp(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        e = t1.f.exp_map(t1)
        ctx.save_for_backward(e)
        return e

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (e,) = ctx.saved_values
        return grad_output.f.mul_zip(grad_output, e)


class Sum(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, dim: Tensor) -> Tensor:
        return a.f.add_reduce(a, _dim(dim))

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        # Every summed element gets the same gradient: the size-1 dim broadcasts back up in
        # Tensor.chain_rule.
        return grad_output, 0.0


class All(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, dim: Tensor) -> Tensor:
        return a.f.mul_reduce(a, _dim(dim))


class LT(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a.shape, b.shape)
        return a.f.lt_zip(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a_shape, b_shape = ctx.saved_values
        return grad_output.zeros(a_shape), grad_output.zeros(b_shape)


class EQ(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a.shape, b.shape)
        return a.f.eq_zip(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a_shape, b_shape = ctx.saved_values
        return grad_output.zeros(a_shape), grad_output.zeros(b_shape)


class IsClose(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        return a.f.is_close_zip(a, b)


class Permute(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, order: Tensor) -> Tensor:
        dims = [int(order[i]) for i in range(order.size)]
        ctx.save_for_backward(dims)
        return a._new(a._tensor.permute(*dims))

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (dims,) = ctx.saved_values
        # Undo the permutation: dimension dims[i] of the input became dimension i of the output.
        inverse = [0] * len(dims)
        for i, d in enumerate(dims):
            inverse[d] = i
        return grad_output._new(grad_output._tensor.permute(*inverse)), 0.0


class View(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, shape: Tensor) -> Tensor:
        if not a._tensor.is_contiguous():
            raise IndexingError(
                f"view needs contiguous data (shape {a.shape}, strides {a._tensor.strides}); "
                "call .contiguous() first"
            )
        new_shape = tuple(int(shape[i]) for i in range(shape.size))
        if int(operators.prod(new_shape)) != a.size:
            raise IndexingError(f"cannot view a tensor of shape {a.shape} as {new_shape}")
        ctx.save_for_backward(a.shape)
        return a._new_from(a._tensor._storage, new_shape)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (original,) = ctx.saved_values
        grad = grad_output.contiguous()
        return grad._new_from(grad._tensor._storage, original), 0.0


class Copy(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor) -> Tensor:
        return a.f.id_map(a)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        return grad_output


def transpose_last(t: Tensor) -> Tensor:
    """Swap the last two dimensions (a strided view, no copy)."""
    order = list(range(t.dims))
    order[-2], order[-1] = order[-1], order[-2]
    return t._new(t._tensor.permute(*order))


class MatMul(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor, t2: Tensor) -> Tensor:
        ctx.save_for_backward(t1, t2)
        return t1.f.matrix_multiply(t1, t2)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        t1, t2 = ctx.saved_values
        f = grad_output.f
        # d(A @ B)/dA = G @ B^T and d(A @ B)/dB = A^T @ G; broadcast batch dims are summed
        # back by Tensor.chain_rule.
        return (
            f.matrix_multiply(grad_output, transpose_last(t2)),
            f.matrix_multiply(transpose_last(t1), grad_output),
        )


# ## Constructors


def zeros(shape: UserShape, backend: TensorBackend = SimpleBackend) -> Tensor:
    """A tensor of zeros."""
    from .tensor import Tensor

    shape = tuple(int(s) for s in shape)
    return Tensor.make(np.zeros(int(operators.prod(shape)), dtype=np.float64), shape, backend=backend)


def rand(shape: UserShape, backend: TensorBackend = SimpleBackend, requires_grad: bool = False) -> Tensor:
    """A tensor of uniform random values in [0, 1), drawn from Python's ``random``."""
    from .tensor import Tensor

    shape = tuple(int(s) for s in shape)
    values = [random.random() for _ in range(int(operators.prod(shape)))]
    t = Tensor.make(values, shape, backend=backend)
    t.requires_grad_(requires_grad)
    return t


def _tensor(
    ls: Any, shape: UserShape, backend: TensorBackend = SimpleBackend, requires_grad: bool = False
) -> Tensor:
    """A tensor from a flat list of values and a shape."""
    from .tensor import Tensor

    t = Tensor.make(ls, tuple(int(s) for s in shape), backend=backend)
    t.requires_grad_(requires_grad)
    return t


def tensor(ls: Any, backend: TensorBackend = SimpleBackend, requires_grad: bool = False) -> Tensor:
    """A tensor from (nested) lists of numbers; the nesting gives the shape."""
    if hasattr(ls, "tolist") and not isinstance(ls, list):
        ls = ls.tolist()  # numpy arrays and similar

    def shape_of(x: Any) -> tuple[int, ...]:
        if isinstance(x, (list, tuple)):
            if len(x) == 0:
                raise ValueError("tensor() needs non-empty lists")
            return (len(x),) + shape_of(x[0])
        return ()

    def flatten(x: Any, shape: tuple[int, ...]) -> list[float]:
        if not shape:
            if isinstance(x, (list, tuple)):
                raise ValueError("tensor() needs a rectangular nested list (ragged input)")
            return [float(x)]
        if not isinstance(x, (list, tuple)) or len(x) != shape[0]:
            raise ValueError("tensor() needs a rectangular nested list (ragged input)")
        return [v for item in x for v in flatten(item, shape[1:])]

    shape = shape_of(ls)
    if not shape:
        raise ValueError("tensor() needs a list; wrap a single number as [x]")
    return _tensor(flatten(ls, shape), shape, backend=backend, requires_grad=requires_grad)


# ## Gradient check


def grad_central_difference(
    f: Any, *vals: Tensor, arg: int = 0, epsilon: float = 1e-6, ind: UserIndex
) -> float:
    """Central difference of ``f(*vals).sum()`` in element ``ind`` of argument ``arg``."""
    x = vals[arg]
    up = zeros(x.shape)
    up[ind] = epsilon
    plus = [v + up if i == arg else v for i, v in enumerate(vals)]
    minus = [v - up if i == arg else v for i, v in enumerate(vals)]
    delta = f(*plus).sum() - f(*minus).sum()
    return delta[0] / (epsilon * 2.0)


def grad_check(f: Any, *vals: Tensor) -> None:
    """Compare backprop gradients of ``f`` with central differences at one random index per input.

    Python's ``random`` is reseeded with 10 before ``f`` runs, so random functions such as
    dropout make the same choices in every call. Tolerances: relative and absolute 1e-2.
    """
    for x in vals:
        x.requires_grad_(True)
        x.zero_grad_()
    random.seed(10)
    out = f(*vals)
    out.sum().backward()
    for i, x in enumerate(vals):
        ind = x._tensor.sample()
        check = grad_central_difference(f, *vals, arg=i, ind=ind)
        assert x.grad is not None, f"no gradient reached argument {i}"
        np.testing.assert_allclose(
            x.grad[ind],
            check,
            1e-2,
            1e-2,
            err_msg=f"Gradient check failed for function {f} on argument {i} at index {ind}: "
            f"backprop {x.grad[ind]}, central difference {check}",
        )
