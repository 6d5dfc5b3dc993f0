"""Module 2: ``Tensor``, an n-dimensional array that records how it was computed.

A tensor is a ``TensorData`` (storage, shape, strides), a ``backend`` that supplies the kernels,
and an optional ``History`` (the function, its context and its inputs). Operators dispatch to
the ``Function`` classes in ``tensor_functions``; ``backward()`` hands the graph to
``autodiff.backpropagate``, and ``chain_rule`` sums each gradient back down to its input's shape
wherever broadcasting stretched that input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import operators
from .autodiff import Context, Variable, backpropagate
from .tensor_data import IndexingError, TensorData, is_device_array, shape_broadcast
from .tensor_functions import (
    EQ,
    LT,
    Add,
    All,
    Copy,
    Exp,
    Function,
    Inv,
    IsClose,
    Log,
    MatMul,
    Mul,
    Neg,
    Permute,
    ReLU,
    Sigmoid,
    Sum,
    View,
    tensor,
)

if TYPE_CHECKING:
    from .tensor_data import Shape, Storage, Strides, UserIndex, UserShape, UserStrides
    from .tensor_ops import TensorBackend

TensorLike = Any  # a Tensor or a plain number


@dataclass
class History:
    """How a tensor was made: the function, its context and its inputs (empty for a leaf)."""

    last_fn: type[Function] | None = None
    ctx: Context | None = None
    inputs: Sequence[Tensor] = field(default_factory=tuple)


_next_tensor_id = 0


class Tensor:
    """An n-dimensional array of floats with reverse-mode autodiff."""

    backend: TensorBackend
    history: History | None
    grad: Tensor | None
    _tensor: TensorData
    unique_id: int
    name: str

    def __init__(
        self,
        v: TensorData,
        back: History | None = None,
        name: str | None = None,
        backend: TensorBackend | None = None,
    ) -> None:
        global _next_tensor_id
        _next_tensor_id += 1
        if backend is None:
            from .tensor_ops import SimpleBackend

            backend = SimpleBackend
        self.unique_id = _next_tensor_id
        if backend.cuda:
            # Move once, at creation: kernels then take device arrays and numba copies nothing
            # per launch, and views made later share the same device storage.
            v.to_cuda_()
        self._tensor = v
        self.history = back
        self.backend = backend
        self.f = backend  # the course's short name for the backend
        self.grad = None
        self.name = name if name is not None else str(self.unique_id)

    # ## Gradient switches

    def requires_grad_(self, x: bool) -> None:
        """Start (a leaf history) or stop (no history) tracking this tensor."""
        self.history = History() if x else None

    def requires_grad(self) -> bool:
        return self.history is not None

    def zero_grad_(self) -> None:
        self.grad = None

    def detach(self) -> Tensor:
        """The same data with no history."""
        return Tensor(self._tensor, backend=self.backend)

    # ## Layout

    @property
    def shape(self) -> tuple[int, ...]:
        return self._tensor.shape

    @property
    def size(self) -> int:
        return self._tensor.size

    @property
    def dims(self) -> int:
        return self._tensor.dims

    def to_numpy(self) -> np.ndarray:
        """A numpy copy in row-major order (fetched from the GPU for device storage)."""
        flat = self.contiguous()._tensor._storage[: self.size]
        host = flat.copy_to_host() if is_device_array(flat) else flat.copy()
        return host.reshape(self.shape)

    def tuple(self) -> tuple[Storage, Shape, Strides]:
        return self._tensor.tuple()

    def _ensure_tensor(self, b: TensorLike) -> Tensor:
        """Numbers become 1-element tensors on this backend (they then broadcast)."""
        if isinstance(b, (int, float, np.integer, np.floating)):
            return Tensor.make([float(b)], (1,), backend=self.backend)
        if isinstance(b, Tensor):
            return b
        raise TypeError(f"cannot combine a Tensor with {type(b).__name__}")

    # ## Arithmetic and comparisons (all differentiable through tensor_functions)

    def __add__(self, b: TensorLike) -> Tensor:
        return Add.apply(self, self._ensure_tensor(b))

    def __radd__(self, b: TensorLike) -> Tensor:
        return Add.apply(self._ensure_tensor(b), self)

    def __sub__(self, b: TensorLike) -> Tensor:
        return Add.apply(self, Neg.apply(self._ensure_tensor(b)))

    def __rsub__(self, b: TensorLike) -> Tensor:
        return Add.apply(self._ensure_tensor(b), Neg.apply(self))

    def __mul__(self, b: TensorLike) -> Tensor:
        return Mul.apply(self, self._ensure_tensor(b))

    def __rmul__(self, b: TensorLike) -> Tensor:
        return Mul.apply(self._ensure_tensor(b), self)

    def __truediv__(self, b: TensorLike) -> Tensor:
        return Mul.apply(self, Inv.apply(self._ensure_tensor(b)))

    def __rtruediv__(self, b: TensorLike) -> Tensor:
        return Mul.apply(self._ensure_tensor(b), Inv.apply(self))

    def __matmul__(self, b: Tensor) -> Tensor:
        return MatMul.apply(self, b)

    def __neg__(self) -> Tensor:
        return Neg.apply(self)

    def __lt__(self, b: TensorLike) -> Tensor:
        return LT.apply(self, self._ensure_tensor(b))

    def __gt__(self, b: TensorLike) -> Tensor:
        return LT.apply(self._ensure_tensor(b), self)

    def __eq__(self, b: TensorLike) -> Tensor:  # type: ignore[override]
        return EQ.apply(self, self._ensure_tensor(b))

    __hash__ = object.__hash__

    def all(self, dim: int | None = None) -> Tensor:
        """1.0 where every element (along ``dim``, or overall) is non-zero."""
        if dim is None:
            return All.apply(self.contiguous().view(self.size), self._ensure_tensor(0))
        return All.apply(self, self._ensure_tensor(dim))

    def is_close(self, y: Tensor) -> Tensor:
        return IsClose.apply(self, y)

    def sigmoid(self) -> Tensor:
        return Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return ReLU.apply(self)

    def log(self) -> Tensor:
        return Log.apply(self)

    def exp(self) -> Tensor:
        return Exp.apply(self)

    def item(self) -> float:
        """The value of a one-element tensor."""
        if self.size != 1:
            raise ValueError(f"item() needs a one-element tensor, got shape {self.shape}")
        return float(self._tensor._storage[self._tensor.index((0,) * self.dims)])

    def sum(self, dim: int | None = None) -> Tensor:
        """Sum over ``dim`` (kept with size 1), or over everything (shape (1,))."""
        if dim is None:
            return Sum.apply(self.contiguous().view(self.size), self._ensure_tensor(0))
        return Sum.apply(self, self._ensure_tensor(dim))

    def mean(self, dim: int | None = None) -> Tensor:
        """Mean over ``dim`` (kept with size 1), or over everything (shape (1,))."""
        if dim is None:
            return self.sum() / self.size
        return self.sum(dim) / self.shape[dim]

    def permute(self, *order: int) -> Tensor:
        """Reorder dimensions: dimension i of the result is dimension ``order[i]`` here."""
        return Permute.apply(self, tensor(list(order)))

    def view(self, *shape: int) -> Tensor:
        """The same contiguous storage seen with another shape of the same size."""
        return View.apply(self, tensor(list(shape)))

    def contiguous(self) -> Tensor:
        """A row-major copy (differentiable)."""
        return Copy.apply(self)

    def __repr__(self) -> str:
        return self._tensor.to_string()

    def __getitem__(self, key: int | UserIndex) -> float:
        key2 = (key,) if isinstance(key, (int, np.integer)) else key
        return self._tensor.get(key2)

    def __setitem__(self, key: int | UserIndex, val: float) -> None:
        key2 = (key,) if isinstance(key, (int, np.integer)) else key
        self._tensor.set(key2, val)

    # ## Construction helpers

    def _type_(self, backend: TensorBackend) -> None:
        """Switch this tensor to another backend (moving storage to the GPU for CUDA)."""
        self.backend = backend
        self.f = backend
        if backend.cuda:
            self._tensor.to_cuda_()

    def _new(self, tensor_data: TensorData) -> Tensor:
        return Tensor(tensor_data, backend=self.backend)

    def _new_from(self, storage: Storage, shape: UserShape) -> Tensor:
        return Tensor(TensorData(storage, shape), backend=self.backend)

    @staticmethod
    def make(
        storage: Storage | list[float],
        shape: UserShape,
        strides: UserStrides | None = None,
        backend: TensorBackend | None = None,
    ) -> Tensor:
        """A new leaf-less tensor from raw storage."""
        return Tensor(TensorData(storage, tuple(shape), strides), backend=backend)

    def expand(self, other: Tensor) -> Tensor:
        """Bring gradient ``other`` to this tensor's shape.

        Where this tensor was broadcast (a size-1 or missing leading dimension), every copy
        received a gradient; the chain rule adds them up, so we sum over those dimensions.
        """
        if self.shape == other.shape:
            return other
        true_shape = shape_broadcast(self.shape, other.shape)
        if other.shape != true_shape:
            # A gradient smaller than the broadcast shape (e.g. from a reduction): stretch it.
            buf = self.zeros(true_shape)
            self.backend.id_map(other, buf)
            other = buf
        if self.shape == true_shape:
            return other
        extra = len(true_shape) - len(self.shape)
        out = other
        for dim in range(len(true_shape)):
            if dim < extra or (self.shape[dim - extra] == 1 and true_shape[dim] != 1):
                out = self.backend.add_reduce(out, dim)
        if out.size != self.size:
            raise IndexingError(f"cannot reduce a gradient of shape {other.shape} to {self.shape}")
        return Tensor.make(out.contiguous()._tensor._storage, self.shape, backend=self.backend)

    def zeros(self, shape: UserShape | None = None) -> Tensor:
        """Zeros on this tensor's backend, of ``shape`` (default: this tensor's shape)."""
        shape = self.shape if shape is None else tuple(shape)
        storage = np.zeros(int(operators.prod(shape)), dtype=np.float64)
        return Tensor.make(storage, shape, backend=self.backend)

    # ## The Variable protocol used by backpropagate

    def is_leaf(self) -> bool:
        return self.history is not None and self.history.last_fn is None

    def is_constant(self) -> bool:
        return self.history is None

    @property
    def parents(self) -> Iterable[Variable]:
        assert self.history is not None
        return self.history.inputs

    def accumulate_derivative(self, x: Any) -> None:
        """Add gradient ``x`` to this leaf's ``grad``."""
        assert self.is_leaf(), "only leaf variables accumulate gradients"
        if self.grad is None:
            self.grad = Tensor.make(
                np.zeros(self.size, dtype=np.float64), self.shape, backend=self.backend
            )
        self.grad = self.backend.add_zip(self.grad, x)

    def chain_rule(self, d_output: Any) -> Iterable[tuple[Variable, Any]]:
        """One (input, gradient) pair per input, each gradient shaped like its input."""
        h = self.history
        assert h is not None and h.last_fn is not None and h.ctx is not None
        local = h.last_fn._backward(h.ctx, d_output)
        assert len(local) == len(h.inputs), f"{h.last_fn} returned {len(local)} gradients"
        return [
            (inp, inp.expand(g) if isinstance(g, Tensor) else g) for inp, g in zip(h.inputs, local)
        ]

    def backward(self, grad_output: Tensor | None = None) -> None:
        """Backpropagate from this tensor; without an argument it must have shape (1,)."""
        if grad_output is None:
            if self.shape != (1,):
                raise ValueError(f"backward() without a gradient needs shape (1,), got {self.shape}")
            grad_output = Tensor.make([1.0], (1,), backend=self.backend)
        backpropagate(self, grad_output)
