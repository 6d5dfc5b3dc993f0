"""The two primitives every puzzle may use, as a contract, and the checks all backends share.

    arange(n)        1-D integer tensor [0, 1, ..., n-1]. `n` is a Python int or a one-element
                     integer tensor (puzzle 20, `repeat`, receives its row count inside a tensor).
    where(q, a, b)   element-wise `a if q else b`; `q` must be a boolean tensor, `a` and `b`
                     broadcast against it and may be Python numbers.

The module-level `arange` and `where` here are placeholders that solutions.py imports so that it
reads (and lints) as ordinary Python; calling them without a backend says what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def arange(n: Any) -> Any:
    raise RuntimeError("no backend bound: use puzzles.bind('numpy') (or torch, jax, ...) and call "
                       "the puzzles it returns")


def where(q: Any, a: Any, b: Any) -> Any:
    raise RuntimeError("no backend bound: use puzzles.bind('numpy') (or torch, jax, ...) and call "
                       "the puzzles it returns")


def size_value(n: Any, to_numpy: Callable[[Any], np.ndarray]) -> int:
    """`n` as a Python int: either a Python int or a one-element integer tensor of the backend."""
    if isinstance(n, bool):
        raise ValueError(f"arange needs an integer size, got the bool {n}")
    if isinstance(n, int):
        value = n
    else:
        array = np.asarray(to_numpy(n))
        if array.size != 1 or array.dtype.kind not in "iu":
            raise ValueError(f"arange needs a Python int or a one-element integer tensor, got "
                             f"shape {array.shape} dtype {array.dtype}")
        value = int(array.reshape(-1)[0])
    if value < 0:
        raise ValueError(f"arange needs a size >= 0, got {value}")
    return value


def require_bool(q: Any, is_bool: Callable[[Any], bool]) -> None:
    """Upstream's `where` computes q*a + (~q)*b, which is silently wrong unless q is boolean."""
    if not is_bool(q):
        raise ValueError(f"where needs a boolean condition, got dtype {getattr(q, 'dtype', type(q))}")
