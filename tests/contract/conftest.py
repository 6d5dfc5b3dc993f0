"""The contract suite runs every registered backend through the same tests: a backend gets them
by registering. A backend whose framework is missing fails here (it is not skipped): every
backend is installed where the suite runs."""

import numpy as np
import pytest

import backends
from backends import spec

CFG = spec.TromptConfig(n_columns=23, n_prompts=5, d_model=8, n_cycles=3)


def pytest_generate_tests(metafunc):
    if "name" in metafunc.fixturenames:
        metafunc.parametrize("name", list(backends.REGISTRY))


@pytest.fixture
def data():
    """Raw-scale features (some columns x30, some zeros), a standardised target, 21 rows."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(21, CFG.n_columns)) * np.where(rng.random(CFG.n_columns) < 0.2, 30.0, 1.0)
    x[rng.random(x.shape) < 0.1] = 0.0
    return x.astype(np.float32), rng.normal(size=21).astype(np.float32)


BATCHES = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 21), np.arange(3, 11)]
