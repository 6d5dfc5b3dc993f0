"""The loop specifications themselves, checked against numpy's own functions (an independent oracle).

If a spec were wrong, every backend would be tested against the wrong answer; here each spec is
compared with numpy's reading of the same puzzle statement on random and edge-case inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puzzles.cases import EDGE_CASES, RandomDraw, draw_case
from puzzles.catalog import PUZZLE_NAMES
from puzzles.harness import expected_result


def _compress(g: np.ndarray, v: np.ndarray, i: int) -> np.ndarray:
    kept = v[g]
    return np.concatenate([kept, np.zeros(i - kept.size)])


def _pad_to(a: np.ndarray, i: int, j: int) -> np.ndarray:
    head = a[:j]
    return np.concatenate([head, np.zeros(j - head.size)])


NUMPY_ORACLE = {
    "ones": lambda i: np.ones(i),
    "sum": lambda a: np.array([a.sum()]),
    "outer": np.outer,
    "diag": np.diag,
    "eye": lambda j: np.eye(j),
    "triu": lambda j: np.triu(np.ones((j, j))),
    "cumsum": np.cumsum,
    "diff": lambda a, i: np.diff(a, prepend=0),
    "vstack": lambda a, b: np.vstack([a, b]),
    "roll": lambda a, i: np.roll(a, -1),
    "flip": lambda a, i: a[::-1],
    "compress": _compress,
    "pad_to": _pad_to,
    "sequence_mask": lambda values, length: values * (np.arange(values.shape[1]) < length[:, None]),
    "bincount": lambda a, j: np.bincount(a, minlength=j),
    "scatter_add": lambda values, link, j: np.bincount(link, weights=values, minlength=j),
    "flatten": lambda a, i, j: a.reshape(-1),
    "linspace": lambda i, j, n: np.linspace(i[0], j[0], n),
    "heaviside": lambda a, b: np.heaviside(a, b),
    "repeat": lambda a, d: np.tile(a, (d[0], 1)),
    "bucketize": lambda v, boundaries: np.searchsorted(boundaries, v, side="right"),
}


def assert_spec_matches_numpy(name: str, case) -> None:
    expected = expected_result(name, case)
    oracle = np.asarray(NUMPY_ORACLE[name](*case.args), dtype=np.float64)
    np.testing.assert_allclose(expected, oracle.reshape(case.shape), rtol=1e-12, atol=1e-12,
                               err_msg=f"{name}{case.describe()}")


@pytest.mark.parametrize("name", PUZZLE_NAMES)
def test_spec_matches_numpy_on_edge_cases(name: str) -> None:
    for case in EDGE_CASES[name]:
        assert_spec_matches_numpy(name, case)


@pytest.mark.parametrize("name", PUZZLE_NAMES)
@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_spec_matches_numpy_on_random_cases(name: str, seed: int) -> None:
    assert_spec_matches_numpy(name, draw_case(name, RandomDraw(seed)))


def test_random_cases_keep_the_original_constraints() -> None:
    """Sizes 1..5, values -5..5, and the per-puzzle constraints of the original harness."""
    for seed in range(200):
        draw = RandomDraw(seed)
        values, boundaries = draw_case("bucketize", draw).args
        assert np.all(np.diff(boundaries) >= 0) and np.all(boundaries >= 0)
        assert np.all(np.abs(values) <= 5) and 1 <= values.size <= 5
        a, j = draw_case("bincount", draw).args
        assert np.all((a >= 0) & (a < j))
        _, link, j = draw_case("scatter_add", draw).args
        assert np.all((link >= 0) & (link < j))
        values, length = draw_case("sequence_mask", draw).args
        assert np.all((length >= 0) & (length <= values.shape[1]))
        a, d = draw_case("repeat", draw).args
        assert d.shape == (1,) and 1 <= d[0] <= 5
