"""The reference (the oracle of every backend) against an independent loop implementation."""

import numpy as np
import pytest
import torch

import backends
from backends import spec
from backends.spec import TromptConfig
from tests import oracle_loops

TINY = TromptConfig(n_columns=3, n_prompts=2, d_model=4, n_cycles=2)


def tiny_problem(seed: int = 0, batch: int = 3):
    rng = np.random.default_rng(seed)
    params = spec.init_params(TINY, seed, "float64")
    # Larger-than-init values everywhere so every term (softmaxes, LayerNorm affine, dense_expand)
    # matters; a few zero inputs and mixed scales like the real data.
    params = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in params.items()}
    x = rng.normal(size=(batch, TINY.n_columns)) * np.array([1.0, 30.0, 0.1])
    x[0, 1] = 0.0
    y = rng.normal(size=batch)
    return params, x, y


@pytest.fixture(scope="module")
def ref64():
    return backends.load("reference", dtype="float64")


def test_forward_matches_loops(ref64):
    params, x, y = tiny_problem()
    expected = oracle_loops.forward(params, x, TINY.n_cycles).real
    got = ref64.forward(params, x, TINY)
    assert got.shape == (3, TINY.n_cycles)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


def test_batch_of_one_keeps_the_cycle_axis(ref64):
    params, x, _ = tiny_problem()
    assert ref64.forward(params, x[:1], TINY).shape == (1, TINY.n_cycles)


def test_loss_and_every_gradient_match_complex_step(ref64):
    params, x, y = tiny_problem(seed=1)
    loss, grads = ref64.loss_and_grad(params, x, y, TINY)
    assert loss == pytest.approx(oracle_loops.loss(params, x, y, TINY.n_cycles).real, rel=1e-13)
    expected = oracle_loops.complex_step_grads(params, x, y, TINY.n_cycles)
    scale = max(np.abs(g).max() for g in expected.values())
    assert set(grads) == set(expected) == set(spec.param_names(TINY))
    for name in spec.param_names(TINY):
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-11, atol=1e-13 * scale, err_msg=name)


def test_dead_parameters_have_zero_gradient(ref64):
    params, x, y = tiny_problem(seed=2)
    expected = oracle_loops.complex_step_grads(params, x, y, TINY.n_cycles)
    _, grads = ref64.loss_and_grad(params, x, y, TINY)
    for name in spec.dead_params(TINY):
        assert np.abs(expected[name]).max() < 1e-15
        assert np.abs(grads[name]).max() < 1e-14


def test_gradients_match_finite_differences(ref64):
    params, x, y = tiny_problem(seed=3)
    _, grads = ref64.loss_and_grad(params, x, y, TINY)
    rng = np.random.default_rng(0)
    h = 1e-6
    for name in ("prompt", "tcells.1.feature_emb_weight", "tcells.0.dense_imp.weight",
                 "tcells.1.dense_expand.bias", "tdown.dense1.weight", "tdown.ln.weight"):
        for _ in range(3):
            idx = tuple(rng.integers(0, s) for s in params[name].shape)
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            loss_plus = ref64.loss_and_grad(plus, x, y, TINY)[0]
            loss_minus = ref64.loss_and_grad(minus, x, y, TINY)[0]
            fd = (loss_plus - loss_minus) / (2 * h)
            assert grads[name][idx] == pytest.approx(fd, rel=1e-6, abs=1e-9), (name, idx)


def independent_adamw(theta, grad, m, v, t, lr=3e-4, wd=1e-5, b1=0.9, b2=0.999, eps=1e-8):
    """AdamW written out again from the paper/torch docs, for the AdamW tests."""
    theta = theta - lr * wd * theta
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    # torch: eps is added to sqrt(v)/sqrt(1 - b2^t), i.e. to sqrt(v_hat)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def test_adamw_steps_match_loops_and_independent_adamw(ref64):
    params, x, y = tiny_problem(seed=4, batch=4)
    batches = [(x[:2], y[:2]), (x[2:], y[2:]), (x[1:3], y[1:3])]
    got, losses = ref64.train_steps(params, batches, TINY)

    theta = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    expected_losses = []
    for t, (xb, yb) in enumerate(batches, start=1):
        expected_losses.append(oracle_loops.loss(theta, xb, yb, TINY.n_cycles).real)
        grads = oracle_loops.complex_step_grads(theta, xb, yb, TINY.n_cycles)
        for k in theta:
            theta[k], m[k], v2[k] = independent_adamw(theta[k], grads[k], m[k], v2[k], t)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)
    for k in spec.param_names(TINY):
        if k in spec.dead_params(TINY):
            continue  # Adam normalises rounding noise of a zero gradient: not comparable (F7)
        np.testing.assert_allclose(got[k], theta[k], rtol=0, atol=1e-12, err_msg=k)


def test_numpy_adamw_matches_torch_adamw():
    rng = np.random.default_rng(5)
    theta0 = rng.normal(size=(7, 5))
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = torch.optim.AdamW([p], lr=1e-2, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8)
    theta, m, v = theta0.copy(), np.zeros_like(theta0), np.zeros_like(theta0)
    for t in range(1, 8):
        g = rng.normal(size=theta0.shape) * 10.0**rng.integers(-6, 1)  # include tiny gradients (eps matters)
        p.grad = torch.tensor(g)
        opt.step()
        theta, m, v = spec.adamw_update(theta, g, m, v, t, lr=1e-2, weight_decay=0.1)
        np.testing.assert_allclose(theta, p.detach().numpy(), rtol=0, atol=1e-15)


def test_float32_reference_is_close_to_float64():
    params, x, y = tiny_problem(seed=6)
    ref32 = backends.load("reference", dtype="float32")
    ref64 = backends.load("reference", dtype="float64")
    np.testing.assert_allclose(ref32.forward(params, x, TINY), ref64.forward(params, x, TINY),
                               rtol=1e-5, atol=1e-5)


def test_parameter_names_and_count_match_the_original():
    cfg = TromptConfig()
    model = __import__("reference.model", fromlist=["Trompt"]).Trompt(cfg)
    names = [k for k, _ in model.named_parameters()]
    assert names == spec.param_names(cfg)
    assert len(names) == 93
    assert sum(p.numel() for p in model.parameters()) == spec.n_params(cfg) == 2_602_370
    assert all(tuple(p.shape) == spec.param_shapes(cfg)[k] for k, p in model.named_parameters())
