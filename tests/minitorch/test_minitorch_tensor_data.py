"""Module 2: strides, indexing and broadcasting of TensorData, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitorch
from minitorch import IndexingError, TensorData
from minitorch.tensor_data import (
    broadcast_index,
    index_to_position,
    shape_broadcast,
    strides_from_shape,
    to_index,
)

from .strategies import few, shapes, some


@some
@given(shapes(max_dims=5, max_size=4))
def test_contiguous_strides_and_positions_match_numpy(shape: tuple[int, ...]) -> None:
    reference = np.arange(int(np.prod(shape))).reshape(shape)
    assert strides_from_shape(shape) == tuple(s // 8 for s in reference.astype(np.float64).strides)
    td = TensorData(reference.ravel().astype(float).tolist(), shape)
    assert td.is_contiguous()
    # to_index enumerates every index exactly once, in numpy's row-major order.
    seen = []
    out = np.zeros(len(shape), dtype=np.int32)
    for ordinal in range(td.size):
        to_index(ordinal, np.array(shape), out)
        seen.append(tuple(out))
        assert index_to_position(out, td._strides) == ordinal
    assert seen == list(np.ndindex(*shape)) == list(td.indices())


@some
@given(st.data(), shapes(max_dims=4, max_size=4))
def test_permute_matches_numpy_transpose(data: st.DataObject, shape: tuple[int, ...]) -> None:
    values = np.arange(int(np.prod(shape)), dtype=float).reshape(shape)
    order = data.draw(st.permutations(range(len(shape))))
    td = TensorData(values.ravel().tolist(), shape).permute(*order)
    expected = values.transpose(order)
    assert td.shape == expected.shape
    for index in np.ndindex(*expected.shape):
        assert td.get(index) == expected[index]
    # The course's definition: contiguous means strides never increase from left to right.
    assert td.is_contiguous() == (list(td.strides) == sorted(td.strides, reverse=True))
    if list(order) == sorted(order):
        assert td.is_contiguous()


@some
@given(shapes(), shapes())
def test_shape_broadcast_agrees_with_numpy(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    try:
        expected = np.broadcast_shapes(a, b)
    except ValueError:
        with pytest.raises(IndexingError, match=r"cannot broadcast shapes"):
            shape_broadcast(a, b)
        return
    result = shape_broadcast(a, b)
    assert isinstance(result, tuple) and result == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [((1,), (5, 5), (5, 5)), ((5, 5), (1,), (5, 5)), ((1, 5, 5), (5, 5), (1, 5, 5)),
     ((5, 1, 5, 1), (1, 5, 1, 5), (5, 5, 5, 5)), ((2, 5), (5,), (2, 5))],
)
def test_shape_broadcast_cases(a, b, expected) -> None:
    assert shape_broadcast(a, b) == expected


@pytest.mark.parametrize(("a", "b"), [((5, 7, 5, 1), (1, 5, 1, 5)), ((5, 2), (5,))])
def test_impossible_broadcast_names_both_shapes(a, b) -> None:
    with pytest.raises(IndexingError) as info:
        shape_broadcast(a, b)
    assert str(a) in str(info.value) and str(b) in str(info.value)


@few
@given(st.data(), shapes(max_dims=4, max_size=3))
def test_broadcast_index_reads_what_numpy_broadcasting_reads(data: st.DataObject, big: tuple[int, ...]) -> None:
    # A smaller shape that broadcasts to ``big``: drop leading dims, set some dims to 1.
    n = data.draw(st.integers(1, len(big)))
    small = tuple(s if data.draw(st.booleans()) else 1 for s in big[len(big) - n:])
    values = np.arange(int(np.prod(small)), dtype=float).reshape(small)
    stretched = np.broadcast_to(values, big)
    out = np.zeros(len(small), dtype=np.int32)
    for index in np.ndindex(*big):
        broadcast_index(np.array(index), np.array(big), np.array(small), out)
        assert values[tuple(out)] == stretched[index]


def test_bad_indices_raise_indexing_error_with_shape() -> None:
    td = TensorData([float(i) for i in range(6)], (2, 3))
    for bad in [(2, 0), (0, 3), (-1, 0), (0,), (0, 0, 0)]:
        with pytest.raises(IndexingError, match=r"\(2, 3\)"):
            td.index(bad)
    with pytest.raises(IndexingError, match="strides"):
        TensorData([1.0, 2.0], (2,), (1, 1))
    with pytest.raises(IndexingError, match="permutation"):
        td.permute(0, 0)
    with pytest.raises(IndexingError):
        minitorch.tensor([[1.0, 2.0]])[5, 0]


def test_sample_and_set_round_trip() -> None:
    td = TensorData([0.0] * 24, (2, 3, 4))
    for _ in range(20):
        index = td.sample()
        assert all(0 <= i < s for i, s in zip(index, td.shape))
    td.set((1, 2, 3), 7.0)
    assert td.get((1, 2, 3)) == 7.0 and td._storage[23] == 7.0
