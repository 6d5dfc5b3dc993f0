"""The small problem the backend-specific tests share: odd sizes, spec initialisation, and
raw-scale features like the real data's (a few ×30 columns, some zeros)."""

import numpy as np

from backends import spec

CFG = spec.TromptConfig(n_columns=29, n_prompts=7, d_model=12, n_cycles=3)
DEAD = set(spec.dead_params(CFG))


def problem(rows: int = 19, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, CFG.n_columns)) * np.where(rng.random(CFG.n_columns) < 0.2, 30.0, 1.0)
    x[rng.random(x.shape) < 0.1] = 0.0
    return spec.init_params(CFG, seed=seed, dtype="float64"), x, rng.normal(size=rows)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Max abs difference relative to the max abs of the oracle `b`."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def assert_same_training(got: dict, losses: list[float], expected: dict, expected_losses: list[float],
                         params: dict) -> None:
    """A float64 trainer's parameters and losses against an oracle's: the updates (not the
    parameters, which barely move) of every live tensor to 1e-10, the losses to 1e-12."""
    assert list(got) == spec.param_names(CFG)
    for name in spec.param_names(CFG):
        if name not in DEAD:
            assert rel_err(got[name] - params[name], expected[name] - params[name]) < 1e-10, name
    assert np.allclose(losses, expected_losses, rtol=1e-12, atol=0)
