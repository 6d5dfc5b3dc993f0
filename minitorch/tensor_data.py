"""Module 2: how an n-dimensional tensor lives in a flat block of memory.

A ``TensorData`` is a 1-D ``storage`` array plus a ``shape`` and ``strides``: the element at
multi-index ``(i0, i1, ...)`` sits at storage position ``i0*s0 + i1*s1 + ...``. Permuting
dimensions only reorders shape and strides; the storage is shared. The index helpers below are
plain loops over numpy arrays so the fast backend can compile them with numba unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from numpy import array, float64

from .operators import prod

MAX_DIMS = 32


class IndexingError(RuntimeError):
    """A bad index, shape, stride or broadcast; the message names the shapes involved."""


Storage: TypeAlias = npt.NDArray[np.float64]
OutIndex: TypeAlias = npt.NDArray[np.int32]
Index: TypeAlias = npt.NDArray[np.int32]
Shape: TypeAlias = npt.NDArray[np.int32]
Strides: TypeAlias = npt.NDArray[np.int32]

UserIndex: TypeAlias = Sequence[int]
UserShape: TypeAlias = Sequence[int]
UserStrides: TypeAlias = Sequence[int]


def is_device_array(storage: object) -> bool:
    """True for a numba.cuda device array (real or simulated), whose values live in GPU memory.

    Host code can index one, but each access is a transfer; ``to_host`` fetches all at once.
    """
    return hasattr(storage, "copy_to_host")


def to_host(storage: Storage) -> Storage:
    """The values of ``storage`` as a numpy array: itself on the host, a fresh copy from a device."""
    return storage.copy_to_host() if is_device_array(storage) else storage


def index_to_position(index: Index, strides: Strides) -> int:
    """Storage position of a multi-index: the dot product of index and strides."""
    # Loop over the strides, not the index: GPU kernels pass index buffers of MAX_DIMS entries.
    position = 0
    for i in range(len(strides)):
        position += index[i] * strides[i]
    return position


def to_index(ordinal: int, shape: Shape, out_index: OutIndex) -> None:
    """Write into ``out_index`` the row-major multi-index of the ``ordinal``-th element of shape.

    Counting ordinal = 0 .. size-1 visits every index exactly once (last dimension fastest).
    """
    remaining = ordinal
    for i in range(len(shape) - 1, -1, -1):
        out_index[i] = remaining % shape[i]
        remaining = remaining // shape[i]


def broadcast_index(big_index: Index, big_shape: Shape, shape: Shape, out_index: OutIndex) -> None:
    """Map an index of the broadcast shape ``big_shape`` to the smaller ``shape``.

    Shapes are right-aligned: the extra leading dimensions of ``big_shape`` are dropped, and a
    dimension of size 1 in ``shape`` always reads position 0.
    """
    offset = len(big_shape) - len(shape)
    for i in range(len(shape)):
        out_index[i] = big_index[i + offset] if shape[i] > 1 else 0


def shape_broadcast(shape1: UserShape, shape2: UserShape) -> tuple[int, ...]:
    """The numpy-style broadcast of two shapes, or ``IndexingError`` if they do not fit."""
    n = max(len(shape1), len(shape2))
    padded1 = (1,) * (n - len(shape1)) + tuple(shape1)
    padded2 = (1,) * (n - len(shape2)) + tuple(shape2)
    result = []
    for a, b in zip(padded1, padded2):
        if a == b or b == 1:
            result.append(int(a))
        elif a == 1:
            result.append(int(b))
        else:
            raise IndexingError(f"cannot broadcast shapes {tuple(shape1)} and {tuple(shape2)}")
    return tuple(result)


def strides_from_shape(shape: UserShape) -> tuple[int, ...]:
    """Row-major (contiguous) strides: the last dimension has stride 1."""
    strides: list[int] = []
    step = 1
    for size in reversed(tuple(shape)):
        strides.insert(0, step)
        step *= int(size)
    return tuple(strides)


class TensorData:
    """Storage + shape + strides, with safe element access."""

    _storage: Storage
    _strides: Strides
    _shape: Shape
    strides: tuple[int, ...]
    shape: tuple[int, ...]
    dims: int

    def __init__(
        self,
        storage: Sequence[float] | Storage,
        shape: UserShape,
        strides: UserStrides | None = None,
    ) -> None:
        # A numpy or device array is kept as is, so views share memory; lists are copied.
        if isinstance(storage, np.ndarray) or is_device_array(storage):
            self._storage = storage
        else:
            self._storage = array(storage, dtype=float64)
        shape = tuple(int(s) for s in shape)
        strides = strides_from_shape(shape) if strides is None else tuple(int(s) for s in strides)
        if len(strides) != len(shape):
            raise IndexingError(f"strides {strides} do not match shape {shape}")
        if any(s < 1 for s in shape):
            raise IndexingError(f"every dimension must be at least 1, got shape {shape}")
        self._strides = array(strides, dtype=np.int32)
        self._shape = array(shape, dtype=np.int32)
        self.strides = strides
        self.shape = shape
        self.dims = len(shape)
        self.size = int(prod(shape))
        if len(self._storage) < self.size:
            raise IndexingError(f"storage of {len(self._storage)} values is too small for shape {shape}")

    def to_cuda_(self) -> None:
        """Move the storage to the GPU (numba.cuda) if it is not already there."""
        import numba.cuda

        if not is_device_array(self._storage):
            self._storage = numba.cuda.to_device(self._storage)

    def is_contiguous(self) -> bool:
        """True when strides never increase from left to right (row-major order)."""
        last = 1e9
        for stride in self._strides:
            if stride > last:
                return False
            last = stride
        return True

    @staticmethod
    def shape_broadcast(shape_a: UserShape, shape_b: UserShape) -> tuple[int, ...]:
        return shape_broadcast(shape_a, shape_b)

    def index(self, index: int | UserIndex) -> int:
        """Storage position of a valid multi-index; ``IndexingError`` names shape and index."""
        if isinstance(index, (int, np.integer)):
            index = (int(index),)
        index = tuple(index)
        if len(index) != len(self.shape):
            raise IndexingError(f"index {index} must have {len(self.shape)} entries for shape {self.shape}")
        for i, size in zip(index, self.shape):
            if i < 0 or i >= size:
                raise IndexingError(f"index {index} is out of range for shape {self.shape}")
        return int(index_to_position(array(index), self._strides))

    def indices(self) -> Iterable[tuple[int, ...]]:
        """Every valid multi-index, in row-major order."""
        index = np.zeros(self.dims, dtype=np.int32)
        for ordinal in range(self.size):
            to_index(ordinal, self._shape, index)
            yield tuple(int(i) for i in index)

    def sample(self) -> tuple[int, ...]:
        """A random valid multi-index."""
        return tuple(random.randint(0, s - 1) for s in self.shape)

    def get(self, key: UserIndex) -> float:
        return float(self._storage[self.index(key)])

    def set(self, key: UserIndex, val: float) -> None:
        self._storage[self.index(key)] = val

    def tuple(self) -> tuple[Storage, Shape, Strides]:
        """(storage, shape, strides) as the backends consume them."""
        return (self._storage, self._shape, self._strides)

    def permute(self, *order: int) -> TensorData:
        """A view with dimensions reordered: dimension i of the result is ``order[i]`` here."""
        if sorted(order) != list(range(len(self.shape))):
            raise IndexingError(f"permute order {order} is not a permutation of the dims of {self.shape}")
        return TensorData(
            self._storage,
            tuple(self.shape[i] for i in order),
            tuple(self.strides[i] for i in order),
        )

    def to_string(self) -> str:
        """Nested-bracket text of the values, like numpy's printing."""
        host = to_host(self._storage)  # one transfer, not one per printed value
        lines = ""
        for index in self.indices():
            opening = ""
            for i in range(len(index) - 1, -1, -1):
                if index[i] == 0:
                    opening = "\n%s[" % ("\t" * i) + opening
                else:
                    break
            lines += opening
            lines += f"{float(host[self.index(index)]):3.2f}"
            closing = ""
            for i in range(len(index) - 1, -1, -1):
                if index[i] == self.shape[i] - 1:
                    closing += "]"
                else:
                    break
            lines += closing if closing else " "
        return lines

    def __repr__(self) -> str:
        return f"TensorData(shape={self.shape}, strides={self.strides})"
