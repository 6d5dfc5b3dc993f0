"""The shared spec (names, shapes, init) and the registry's one-line errors."""

import numpy as np
import pytest

import backends
from backends import spec
from backends.spec import TromptConfig

SMALL = TromptConfig(n_columns=5, n_prompts=3, d_model=4, n_cycles=2)


def test_config_defaults_are_the_original():
    assert TromptConfig() == TromptConfig(n_columns=984, n_prompts=128, d_model=128, n_cycles=6)
    assert backends.TromptConfig is TromptConfig


@pytest.mark.parametrize("bad", [dict(n_columns=0), dict(d_model=-1), dict(n_cycles=2.5), dict(n_prompts=True)])
def test_config_rejects_non_positive_ints(bad):
    with pytest.raises(ValueError, match="positive int"):
        TromptConfig(**bad)


def test_parameter_count_formula():
    cfg = TromptConfig()
    C, P, D, N = 984, 128, 128, 6
    per_cell = 3 * C * D + P * D + 2 * D * D + D + 6 * D + 2 * P
    assert per_cell == 428_160
    assert spec.n_params(cfg) == N * per_cell + P * D + 17_026


def test_init_follows_the_torch_defaults():
    cfg = TromptConfig()
    p = spec.init_params(cfg, seed=0)
    D = 128
    assert np.abs(p["tcells.0.feature_emb_weight"]).max() <= 1 / np.sqrt(D)
    assert np.abs(p["tcells.0.feature_emb_weight"]).max() > 0.99 / np.sqrt(D)
    assert np.abs(p["tcells.3.dense_imp.weight"]).max() <= 1 / np.sqrt(2 * D)
    assert np.abs(p["tcells.3.dense_expand.weight"]).max() > 0.9  # U(-1, 1): fan_in 1
    assert 0.009 < p["prompt"].std() < 0.011 and 0.009 < p["tcells.5.emb_column"].std() < 0.011
    assert (p["tcells.1.ln_col.weight"] == 1).all() and (p["tdown.ln.bias"] == 0).all()
    assert all(v.dtype == np.float32 for v in p.values())
    q = spec.init_params(cfg, seed=0, dtype="float64")
    np.testing.assert_allclose(q["prompt"], p["prompt"], rtol=1e-6)
    assert not np.array_equal(spec.init_params(cfg, seed=1)["prompt"], p["prompt"])


def test_dead_params_are_named_parameters():
    assert set(spec.dead_params(SMALL)) <= set(spec.param_names(SMALL))
    assert len(spec.dead_params(TromptConfig())) == 7


def test_registry_lists_and_loads():
    assert "reference" in backends.available()
    assert backends.load("reference").name == "reference"


@pytest.mark.parametrize("call, message", [
    (lambda: backends.load("nope"), "unknown backend 'nope'; choose one of reference, jax, mlx, tinygrad, torch"),
    (lambda: backends.load("reference", device="tpu"), "unknown device 'tpu'"),
    (lambda: backends.load("reference", dtype="float16"), "unknown dtype"),
])
def test_registry_errors_are_one_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_inputs_through_the_api():
    b = backends.load("reference", dtype="float64")
    p = spec.init_params(SMALL)
    x = np.zeros((2, 5))
    y = np.zeros(2)
    cases = [
        (lambda: b.forward(p, np.zeros(5), SMALL), "x must be 2-D"),
        (lambda: b.forward(p, np.zeros((2, 6)), SMALL), "x has 6 columns"),
        (lambda: b.forward({k: v for k, v in p.items() if k != "prompt"}, x, SMALL), "missing parameters: prompt"),
        (lambda: b.forward({**p, "bogus": np.zeros(1)}, x, SMALL), "unknown parameters: bogus"),
        (lambda: b.forward({**p, "prompt": np.zeros((3, 5))}, x, SMALL), r"prompt has shape \(3, 5\)"),
        (lambda: b.loss_and_grad(p, x, np.array([0.0, np.nan]), SMALL), "NaN or inf"),
        (lambda: b.loss_and_grad(p, x, np.zeros((2, 1)), SMALL), "y must be 1-D"),
        (lambda: b.loss_and_grad(p, x, np.zeros(3), SMALL), "y has 3 rows"),
        (lambda: b.trainer(p, SMALL, x, y, turbo=True), r"unknown option\(s\) turbo for backend 'reference'"),
        (lambda: b.trainer(p, SMALL, x, y, lr=float("nan")), "lr must be a finite number"),
        (lambda: b.trainer(p, SMALL, x, y, weight_decay=-1.0), "weight_decay must be a finite number >= 0"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
