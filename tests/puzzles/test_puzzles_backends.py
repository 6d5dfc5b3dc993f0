"""Every puzzle on every backend against its plain-Python loop specification.

Hypothesis draws inputs from the original's domain (sizes 1..5, values -5..5, the per-puzzle
constraints; equal sizes allowed too) and the named edge cases in puzzles/cases.py run as well.
A result must have exactly the declared shape, an integer (linspace: float) dtype and the
spec's values. Runs are derandomized and database-free, so a failure reproduces exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from puzzles import bind
from puzzles.backends import NAMES, load
from puzzles.binding import rebind
from puzzles.cases import EDGE_CASES, Case, draw_case
from puzzles.catalog import PUZZLE_NAMES
from puzzles.harness import cases_for, compare, edge_cases_for, run_case

# jax and tinygrad compile every new shape (seconds per puzzle on a busy 2-core machine), so they
# get fewer random examples; their edge cases still all run. Each sits in one xdist group so one
# worker process keeps that backend's compile cache.
EXAMPLES = {"numpy": 40, "torch": 30, "mlx": 30, "minitorch": 12, "jax": 8, "tinygrad": 8}
SLOW_BACKENDS = ("jax", "tinygrad")
BACKENDS = [pytest.param(name, marks=pytest.mark.xdist_group(f"puzzles-{name}")) if name in SLOW_BACKENDS
            else name for name in NAMES]


class HypothesisDraw:
    """The `Draw` interface of puzzles/cases.py, answered by hypothesis (so failures shrink)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def integers(self, shape: tuple[int, ...], low: int, high: int) -> np.ndarray:
        count = int(np.prod(shape))
        values = self.data.draw(st.lists(st.integers(low, high), min_size=count, max_size=count))
        return np.array(values, dtype=np.int64).reshape(shape)

    def booleans(self, length: int) -> np.ndarray:
        values = self.data.draw(st.lists(st.booleans(), min_size=length, max_size=length))
        return np.array(values, dtype=np.bool_)


@pytest.mark.parametrize("name", PUZZLE_NAMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_puzzle_matches_loop_spec(backend: str, name: str) -> None:
    puzzles = bind(backend)

    @settings(max_examples=EXAMPLES[backend], deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def matches_spec(data: st.DataObject) -> None:
        case = draw_case(name, HypothesisDraw(data))
        problem = run_case(puzzles, backend, name, case)
        assert problem is None, f"{backend}: {name}{case.describe()} -> {problem}"

    matches_spec()


@pytest.mark.parametrize("name", PUZZLE_NAMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_puzzle_edge_cases(backend: str, name: str) -> None:
    puzzles = bind(backend)
    cases = edge_cases_for(name, backend)  # all of them, except zero-size ones on minitorch
    assert cases
    problems = [f"{name}{case.describe()} -> {problem}" for case in cases
                if (problem := run_case(puzzles, backend, name, case)) is not None]
    assert not problems, f"{backend}:\n" + "\n".join(problems)


def test_only_minitorch_leaves_out_zero_size_cases_and_it_says_why() -> None:
    assert [name for name in NAMES if not load(name).zero_size] == ["minitorch"]
    minitorch = load("minitorch")
    with pytest.raises(ValueError, match="no zero-size tensors"):
        minitorch.tensor(np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="no zero-size tensors"):
        minitorch.arange(0)


def test_every_puzzle_has_edge_cases() -> None:
    assert set(EDGE_CASES) == set(PUZZLE_NAMES)
    assert all(EDGE_CASES[name] for name in PUZZLE_NAMES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_harness_catches_a_wrong_answer(backend: str) -> None:
    """The comparison can fail: cumsum without its last term, and sum with a 0-d result."""
    primitives = load(backend)
    wrong = rebind({"triu": lambda j: where(arange(j)[:, None] < arange(j), 1, 0),  # noqa: F821
                    "cumsum": lambda a: a @ triu(a.shape[0]),  # noqa: F821
                    "sum": lambda a: arange(a.shape[0]) * 0 @ a},  # noqa: F821
                   primitives.arange, primitives.where)
    case = Case((np.array([1, 2, 3]),), (3,))
    assert "spec says [1, 3, 6]" in run_case(wrong, backend, "cumsum", case)
    assert "declared (1,)" in run_case(wrong, backend, "sum", Case((np.array([1, 2]),), (1,)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_primitives_check_their_arguments(backend: str) -> None:
    primitives = load(backend)
    as_list = lambda x: primitives.to_numpy(x).tolist()  # noqa: E731
    assert as_list(primitives.arange(3)) == [0, 1, 2]
    assert as_list(primitives.arange(primitives.tensor(np.array([2])))) == [0, 1]  # repeat's d[0]
    mask = primitives.tensor(np.array([True, False]))
    assert as_list(primitives.where(mask, primitives.tensor(np.array([4, 5])), 0)) == [4, 0]
    with pytest.raises(ValueError, match="boolean condition"):
        primitives.where(primitives.tensor(np.array([1, 0])), 1, 0)
    with pytest.raises(ValueError, match="one-element integer tensor"):
        primitives.arange(primitives.tensor(np.array([1, 2])))
    with pytest.raises(ValueError, match=">= 0"):
        primitives.arange(-1)


def test_bound_solutions_have_no_builtins() -> None:
    """A solution that calls a Python builtin fails at run time too, not only in the rule checker."""
    numpy_backend = load("numpy")
    cheating = rebind({"ones": lambda i: len(range(i))}, numpy_backend.arange, numpy_backend.where)
    with pytest.raises(NameError):
        cheating.ones(3)


def test_mlx_integer_matmul_is_exact() -> None:
    """mlx multiplies integers by broadcast and sum; a float32 round trip would lose these digits."""
    mlx = load("mlx")
    big = np.array([[2**24 + 1, 3], [-(2**20) - 7, 1]], dtype=np.int32)
    vector = np.array([1, 5], dtype=np.int32)
    small = np.array([[1, -2], [3, 0]], dtype=np.int32)
    for left, right in [(big, vector), (vector, big), (big, small), (vector, vector)]:
        got = mlx.to_numpy(mlx.tensor(left) @ mlx.tensor(right))
        assert got.dtype.kind == "i"
        np.testing.assert_array_equal(got, left.astype(np.int64) @ right.astype(np.int64))
    with pytest.raises(ValueError, match="not booleans"):
        mlx.tensor(np.array([True])) @ mlx.tensor(np.array([True]))


@pytest.mark.parametrize("name", PUZZLE_NAMES)
def test_original_harness_convention_on_torch(name: str) -> None:
    """Upstream passes every argument through torch.tensor, sizes included (as 0-d int64 tensors)."""
    import torch

    puzzle = getattr(bind("torch"), name)
    for case in cases_for(name, "torch", examples=10, seed=1):
        got = puzzle(*(torch.tensor(a) for a in case.args)).numpy()
        problem = compare(name, got, case)
        assert problem is None, f"{name}{case.describe()} with 0-d size tensors -> {problem}"
