"""The primitives `arange` and `where`, bound to each framework, plus input/output conversion.

    from puzzles.backends import load
    numpy_backend = load("numpy")
    numpy_backend.arange(3)            # array([0, 1, 2])

Each framework is imported only when its backend is loaded. Integer inputs are converted to the
dtype that framework's `arange` produces (int64 in numpy and torch, int32 in jax, tinygrad and
mlx), so no puzzle mixes integer widths (torch's `@` refuses mixed dtypes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from puzzles.primitives import require_bool, size_value

NAMES = ("numpy", "torch", "jax", "tinygrad", "mlx", "minitorch")


@dataclass(frozen=True)
class Backend:
    name: str
    arange: Callable[[Any], Any]
    where: Callable[[Any, Any, Any], Any]
    tensor: Callable[[np.ndarray], Any]  # numpy int/bool array -> this framework's tensor
    to_numpy: Callable[[Any], np.ndarray]
    zero_size: bool = True  # can it hold tensors with no elements? (minitorch cannot)


def _make(name: str, native_arange: Callable[[int], Any], native_where: Callable[[Any, Any, Any], Any],
          is_bool: Callable[[Any], bool], tensor: Callable[[np.ndarray], Any],
          to_numpy: Callable[[Any], np.ndarray], zero_size: bool = True) -> Backend:
    """Wrap a framework's own arange/where with the argument checks every backend shares."""

    def arange(n: Any) -> Any:
        return native_arange(size_value(n, to_numpy))

    def where(q: Any, a: Any, b: Any) -> Any:
        require_bool(q, is_bool)
        return native_where(q, a, b)

    return Backend(name, arange, where, tensor, to_numpy, zero_size)


def _numpy() -> Backend:
    return _make("numpy", lambda n: np.arange(n, dtype=np.int64), np.where,
                 lambda q: isinstance(q, np.ndarray) and q.dtype == np.bool_,
                 lambda array: np.array(array, dtype=np.bool_ if array.dtype == np.bool_ else np.int64),
                 np.asarray)


def _torch() -> Backend:
    import torch

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.tensor(array, dtype=torch.bool if array.dtype == np.bool_ else torch.int64)

    return _make("torch", lambda n: torch.arange(n, dtype=torch.int64), torch.where,
                 lambda q: isinstance(q, torch.Tensor) and q.dtype == torch.bool, tensor,
                 lambda t: t.detach().cpu().numpy())


def _jax() -> Backend:
    import jax.numpy as jnp

    def tensor(array: np.ndarray) -> Any:
        return jnp.asarray(array if array.dtype == np.bool_ else array.astype(np.int32))

    return _make("jax", lambda n: jnp.arange(n, dtype=jnp.int32), jnp.where,
                 lambda q: hasattr(q, "dtype") and q.dtype == jnp.bool_, tensor, np.asarray)


def _tinygrad() -> Backend:
    from tinygrad import Tensor, dtypes

    try:  # tinygrad picks its device lazily; without a compiler the first kernel fails
        Tensor([1]).realize()
    except RuntimeError as error:
        raise ValueError(f"backend 'tinygrad' is not usable here: {error} (its CPU device compiles "
                         "kernels with clang: is clang on PATH?)") from None

    def tensor(array: np.ndarray) -> Tensor:
        return Tensor(array if array.dtype == np.bool_ else array.astype(np.int32))

    return _make("tinygrad", lambda n: Tensor.arange(n, dtype=dtypes.int32),
                 lambda q, a, b: q.where(a, b),
                 lambda q: isinstance(q, Tensor) and q.dtype == dtypes.bool, tensor,
                 lambda t: t.numpy())


def _mlx() -> Backend:
    import mlx.core as mx

    from puzzles.mlx_array import MlxArray, unwrap

    def tensor(array: np.ndarray) -> MlxArray:
        return MlxArray(mx.array(array if array.dtype == np.bool_ else array.astype(np.int32)))

    return _make("mlx", lambda n: MlxArray(mx.arange(n, dtype=mx.int32)),
                 lambda q, a, b: MlxArray(mx.where(unwrap(q), unwrap(a), unwrap(b))),
                 lambda q: isinstance(q, MlxArray) and q.dtype == mx.bool_, tensor,
                 lambda t: np.array(unwrap(t)))


def _minitorch() -> Backend:
    from puzzles.minitorch_adapter import make_backend_parts

    return _make("minitorch", *make_backend_parts(), zero_size=False)


_FACTORIES: dict[str, Callable[[], Backend]] = {
    "numpy": _numpy, "torch": _torch, "jax": _jax, "tinygrad": _tinygrad, "mlx": _mlx,
    "minitorch": _minitorch,
}


@cache
def load(name: str) -> Backend:
    """The backend called `name`; an unknown name or a missing framework is a one-line ValueError."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(NAMES)}")
    try:
        return _FACTORIES[name]()
    except ImportError as error:
        raise ValueError(f"backend {name!r} is not usable here: {error}") from None
