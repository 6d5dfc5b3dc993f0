"""MLX-specific checks of backends/mlx (the generic contract tests over every backend live in
tests/contract/).

Oracles: the faithful reference model in float64, numpy (softmax, spec.adamw_update: torch's
AdamW), and MLX's own gradients stepped by that numpy AdamW.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlx")

from backends.mlx.train import TorchAdamW  # noqa: E402  (first: it preloads OpenBLAS for mlx.core)

# isort: split
import mlx.core as mx  # noqa: E402
import mlx.optimizers as optim  # noqa: E402

import backends  # noqa: E402
from backends import spec  # noqa: E402
from backends.base import Backend  # noqa: E402
from backends.mlx.model import softmax  # noqa: E402
from tests.backends.problems import CFG, DEAD, assert_same_training, problem, rel_err  # noqa: E402
from tests.contract.round_trip import assert_continues_bit_identically  # noqa: E402


@pytest.fixture(scope="module")
def reference() -> Backend:
    return backends.load("reference", dtype="float64")


@pytest.mark.parametrize("compile", [True, False])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-4)])
def test_forward_loss_and_every_gradient_match_the_reference(dtype, tol, compile, reference):
    params, x, y = problem(rows=5)
    ours = backends.load("mlx", dtype=dtype)
    assert rel_err(ours.forward(params, x, CFG, compile=compile), reference.forward(params, x, CFG)) < tol
    loss, grads = ours.loss_and_grad(params, x, y, CFG, compile=compile)
    ref_loss, ref_grads = reference.loss_and_grad(params, x, y, CFG)
    assert abs(loss - ref_loss) / ref_loss < tol
    for name, ref_grad in ref_grads.items():
        if name in DEAD:  # F7: zero true gradient; both sides carry rounding noise only
            assert np.abs(grads[name]).max() < (1e-12 if dtype == "float64" else 1e-5), name
        else:
            assert rel_err(grads[name], ref_grad) < tol, name


def test_float64_softmax_is_float64_accurate():
    """MLX's CPU float64 exp is only float32-accurate; the model's softmax must not inherit that."""
    z = np.random.default_rng(1).normal(scale=5.0, size=(4, 6, 50))
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    expected = e / e.sum(axis=-1, keepdims=True)
    ours = np.array(softmax(mx.array(z, dtype=mx.float64), axis=-1))
    assert np.abs(ours - expected).max() < 1e-15
    stock_exp = np.array(mx.exp(mx.array(z[0], dtype=mx.float64)))  # why the workaround exists
    assert rel_err(stock_exp, np.exp(z[0])) > 1e-12


def run_adamw(optimizer, params: dict, grads_per_step: list[dict], dtype) -> dict:
    tree = {k: mx.array(v, dtype=dtype) for k, v in params.items()}
    optimizer.init(tree)
    for grads in grads_per_step:
        if isinstance(optimizer, TorchAdamW):
            optimizer.prepare_step()
        tree = optimizer.apply_gradients({k: mx.array(g, dtype=dtype) for k, g in grads.items()}, tree)
    return {k: np.array(v) for k, v in tree.items()}


def numpy_adamw(params: dict, grads_per_step: list[dict], lr: float, wd: float) -> dict:
    state = {k: (v.copy(), np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    for step, grads in enumerate(grads_per_step, start=1):
        for k, g in grads.items():
            state[k] = spec.adamw_update(*state[k][:1], g, *state[k][1:], step, lr, wd)
    return {k: s[0] for k, s in state.items()}


def test_torch_adamw_equals_the_numpy_yardstick_and_stock_mlx_does_not():
    rng = np.random.default_rng(2)
    params = {"a": rng.normal(size=(30, 7)), "b": rng.normal(size=5)}
    # Gradients of very different sizes, as Adam sees them: its normalisation hides nothing.
    grads = [{k: rng.normal(size=v.shape) * 10.0 ** rng.integers(-6, 2, size=v.shape) for k, v in params.items()}
             for _ in range(6)]
    lr, wd = 1e-2, 0.1  # large, so that decay and the update both show
    expected = numpy_adamw(params, grads, lr, wd)
    updates = {k: expected[k] - params[k] for k in params}

    ours = run_adamw(TorchAdamW(lr, wd, "float64"), params, grads, mx.float64)
    assert max(rel_err(ours[k] - params[k], updates[k]) for k in params) < 1e-13
    ours32 = run_adamw(TorchAdamW(lr, wd, "float32"), params, grads, mx.float32)
    assert max(rel_err(ours32[k] - params[k], updates[k]) for k in params) < 2e-5

    # Stock MLX with bias correction on: torch's formula, but beta**t in float32 (the reason
    # TorchAdamW exists). If a future MLX fixes this, the subclass can go.
    stock = optim.AdamW(learning_rate=lr, betas=list(spec.BETAS), eps=spec.ADAM_EPS, weight_decay=wd,
                        bias_correction=True)
    stock_out = run_adamw(stock, params, grads, mx.float64)
    assert max(rel_err(stock_out[k] - params[k], updates[k]) for k in params) > 1e-7


def gradients_with_numpy_adamw(b: Backend, params: dict, batches: list) -> tuple[dict, list[float]]:
    """The trainer's computation split in two: MLX gradients (loss_and_grad) and numpy AdamW."""
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    losses = []
    for step, (x, y) in enumerate(batches, start=1):
        loss, grads = b.loss_and_grad(params, x, y, CFG)
        for k, g in grads.items():
            params[k], *moments[k] = spec.adamw_update(params[k], g, *moments[k], step)
        losses.append(loss)
    return params, losses


def test_trainer_equals_mlx_gradients_with_numpy_adamw_including_a_short_batch():
    """Compiled trainer (MLX AdamW) vs MLX gradients + spec.adamw_update."""
    params, x, y = problem(rows=19)
    b = backends.load("mlx", dtype="float64")
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 19)]  # last one short, like an epoch end
    trainer = b.trainer(params, CFG, x, y)
    trainer.run(batches)
    trainer.sync()
    expected, expected_losses = gradients_with_numpy_adamw(b, params, [(x[i], y[i]) for i in batches])
    assert_same_training(trainer.params(), trainer.losses(), expected, expected_losses, params)


def test_compiled_and_eager_steps_agree_and_train_steps_state_carries_over():
    params, x, y = problem(rows=16, seed=3)
    b = backends.load("mlx", dtype="float64")
    eager = b.trainer(params, CFG, x, y, compile=False)
    compiled = b.trainer(params, CFG, x, y, compile=True)
    for t in (eager, compiled):
        t.run([np.arange(8), np.arange(8, 16)])
    for name in spec.param_names(CFG):
        assert np.abs(eager.params()[name] - compiled.params()[name]).max() < 1e-13, name

    # train_steps in two calls sharing `state` = one trainer stepping through both batches
    state: dict = {}
    first, _ = b.train_steps(params, [(x[:8], y[:8])], CFG, state=state)
    assert int(state["step"]) == 1
    second, _ = b.train_steps(first, [(x[8:], y[8:])], CFG, state=state)
    for name in spec.param_names(CFG):
        assert np.array_equal(second[name], compiled.params()[name]), name


def test_first_loss_and_predict_match_the_reference(reference):
    params, x, y = problem(rows=70, seed=4)
    b = backends.load("mlx", dtype="float64")
    trainer = b.trainer(params, CFG, x, y)
    before = trainer.predict(x)  # 70 rows: two chunks of 64, the second short
    assert before.shape == (70, CFG.n_cycles)
    assert rel_err(before, reference.forward(params, x, CFG)) < 1e-12
    trainer.step(np.arange(8))
    ref_loss, _ = reference.loss_and_grad(params, x[:8], y[:8], CFG)
    assert abs(trainer.losses()[0] - ref_loss) / ref_loss < 1e-12  # loss of the pre-update weights
    assert trainer.peak_memory_mb() > 0


def test_bad_inputs_are_one_line_value_errors():
    params, x, y = problem(rows=4)
    b = backends.load("mlx")
    cases = [
        (lambda: b.trainer(params, CFG, x, y, no_such_option=1), "no_such_option"),
        (lambda: b.trainer(params, CFG, x, y, parallel="ddp"), "parallel"),
        (lambda: b.trainer(params, CFG, x, y, compile="maybe"), "compile"),
        (lambda: backends.load("mlx", device="tpu"), "unknown device"),
        (lambda: backends.load("mlx", device="gpu", dtype="float64"), "float64"),
    ]
    if not mx.is_available(mx.gpu):
        cases.append((lambda: backends.load("mlx", device="gpu"), "no GPU"))
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_blas_is_chosen_before_mlx_core_and_reported():
    assert "BLAS" in backends.load("mlx").versions()["mlx_blas"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_eager_trainer_resumes_bit_for_bit_too(dtype):
    # The compiled trainer (the default) is covered by tests/contract; this is compile=False.
    _, x, y = problem(rows=24, seed=5)
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 21), np.arange(3, 11)]
    assert_continues_bit_identically(backends.load("mlx", dtype=dtype), CFG, x, y, batches, compile=False)
