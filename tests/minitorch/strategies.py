"""Shared hypothesis strategies and helpers for the minitorch tests.

Hypothesis deadlines are off (``settings(deadline=None)``): numba compiles a kernel inside the
first example that uses it, which can take seconds.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import minitorch

# Few examples per test keeps the whole folder within a couple of minutes on two cores.
few = settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow])
some = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])

small_floats = st.floats(min_value=-100, max_value=100, allow_nan=False)
# Values kept a quarter away from whole and half numbers: the comparison functions in the test
# catalogue jump at offsets like 1.2 and 5.5 from integers, where finite differences are invalid.
smooth_floats = st.integers(min_value=-40, max_value=40).map(lambda k: k * 0.5 + 0.25 + 0.0123)


@st.composite
def shapes(draw: st.DrawFn, max_dims: int = 4, max_size: int = 3) -> tuple[int, ...]:
    return tuple(draw(st.lists(st.integers(1, max_size), min_size=1, max_size=max_dims)))


@st.composite
def arrays(draw: st.DrawFn, shape: tuple[int, ...] | None = None, elements: st.SearchStrategy = small_floats):
    """A float64 numpy array of a drawn (or given) shape."""
    shape = draw(shapes()) if shape is None else shape
    values = draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return np.array(values, dtype=np.float64).reshape(shape)


@st.composite
def permuted_tensor(draw: st.DrawFn, array: np.ndarray, backend: minitorch.TensorBackend) -> minitorch.Tensor:
    """A tensor holding ``array`` but stored in a drawn permuted (non-contiguous) layout."""
    order = draw(st.permutations(range(array.ndim)))
    stored = np.ascontiguousarray(array.transpose(order))
    inverse = list(np.argsort(order))
    t = minitorch.Tensor.make(stored.ravel().copy(), stored.shape, backend=backend)
    return t.permute(*inverse)


def assert_tensor_equals(t: minitorch.Tensor, expected: np.ndarray, atol: float = 1e-9) -> None:
    assert t.shape == expected.shape, f"shape {t.shape} != {expected.shape}"
    np.testing.assert_allclose(t.to_numpy(), expected, rtol=1e-9, atol=atol)


FAST = minitorch.TensorBackend(minitorch.FastOps)
SIMPLE = minitorch.SimpleBackend
