"""Torch-specific checks of backends/torch against the float64 reference (the generic tests of
every backend live in tests/contract/).

Oracles: the faithful reference model (float64), for the dead parameters of F7 the closed form of
AdamW with a zero gradient (pure weight decay), and for checkpoints the uninterrupted run itself.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import backends  # noqa: E402
from backends import spec  # noqa: E402
from backends.torch.model import VARIANTS  # noqa: E402
from tests.backends.problems import CFG, DEAD, problem, rel_err  # noqa: E402


def make_backend(device: str = "cpu", dtype: str = "float32") -> backends.Backend:
    return backends.load("torch", device=device, dtype=dtype)


@pytest.fixture(scope="module")
def reference() -> backends.Backend:
    return backends.load("reference", dtype="float64")


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_forward_loss_and_every_gradient(variant, dtype, tol, reference):
    params, x, y = problem(rows=5)
    ours = make_backend(dtype=dtype)
    assert rel_err(ours.forward(params, x, CFG, variant=variant), reference.forward(params, x, CFG)) < tol
    loss, grads = ours.loss_and_grad(params, x, y, CFG, variant=variant)
    ref_loss, ref_grads = reference.loss_and_grad(params, x, y, CFG)
    assert abs(loss - ref_loss) / ref_loss < tol
    assert set(grads) == set(ref_grads)
    for name, ref_grad in ref_grads.items():
        if name in DEAD:
            # F7: the true gradient is zero; the reference only carries rounding noise.
            assert np.abs(ref_grad).max() < 1e-12 and not grads[name].any(), name
        else:
            assert rel_err(grads[name], ref_grad) < tol, name


def test_predict_keeps_the_cycle_axis_for_one_row(reference):
    params, x, _ = problem(rows=1)
    assert make_backend(dtype="float64").forward(params, x, CFG).shape == (1, CFG.n_cycles)


def batches_of(n_rows: int, size: int = 8) -> list[np.ndarray]:
    order = np.random.default_rng(5).permutation(n_rows)
    return [order[i:i + size] for i in range(0, n_rows, size)]  # the last one is partial


@pytest.mark.parametrize("optimizer", ["default", "foreach", "fused"])
@pytest.mark.parametrize("variant", ["r3", "r5"])
def test_trainer_adamw_steps_match_reference_float64(variant, optimizer, reference):
    params, x, y = problem(rows=19)
    batches = batches_of(len(x))
    ref_params, ref_losses = reference.train_steps(params, [(x[i], y[i]) for i in batches], CFG)
    trainer = make_backend(dtype="float64").trainer(params, CFG, x, y, variant=variant, optimizer=optimizer)
    trainer.run(batches)
    ours = trainer.params()
    np.testing.assert_allclose(trainer.losses(), ref_losses, rtol=1e-10)
    for name, ref in ref_params.items():
        if name in DEAD:
            # Zero gradient: AdamW leaves m = v = 0 and only decays, p·(1 − lr·wd)^steps.
            decayed = params[name] * (1 - spec.LR * spec.WEIGHT_DECAY) ** len(batches)
            np.testing.assert_allclose(ours[name], decayed, rtol=1e-12, atol=1e-15)
        else:
            assert rel_err(ours[name], ref) < 1e-10, name
    assert rel_err(trainer.predict(x), reference.forward(ref_params, x, CFG)) < 1e-10


def test_trainer_float32_tracks_the_float64_reference(reference):
    params, x, y = problem(rows=19)
    batches = batches_of(len(x))
    ref_params, ref_losses = reference.train_steps(params, [(x[i], y[i]) for i in batches], CFG)
    trainer = make_backend(dtype="float32").trainer(params, CFG, x, y)
    trainer.run(batches)
    assert rel_err(trainer.losses(), np.array(ref_losses)) < 1e-4
    assert rel_err(trainer.predict(x), reference.forward(ref_params, x, CFG)) < 1e-4


def test_host_loop_is_the_same_computation():
    """The original loop shape (copy per step, read the loss per step) changes no number."""
    params, x, y = problem(rows=19)
    runs = []
    for host_loop in (True, False):
        trainer = make_backend(dtype="float32").trainer(params, CFG, x, y, host_loop=host_loop)
        trainer.run(batches_of(len(x)))
        runs.append((trainer.losses(), trainer.params()))
    assert runs[0][0] == runs[1][0]
    for name in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][name], runs[1][1][name], err_msg=name)


def test_train_steps_state_carries_over():
    """Two calls of two batches with the state passed along = one call of four batches."""
    params, x, y = problem(rows=32)
    batches = [(x[i], y[i]) for i in batches_of(len(x))]
    ours = make_backend(dtype="float64")
    whole, whole_losses = ours.train_steps(params, batches, CFG)
    state: dict = {}
    half, first = ours.train_steps(params, batches[:2], CFG, state=state)
    split, second = ours.train_steps(half, batches[2:], CFG, state=state)
    np.testing.assert_allclose(first + second, whole_losses, rtol=1e-13)
    for name in whole:
        np.testing.assert_allclose(split[name], whole[name], rtol=1e-12, atol=1e-15, err_msg=name)


def test_amp_bf16_runs_and_is_labelled_by_its_deviation(reference):
    """bf16 autocast: close to the reference, but clearly not float32-exact (what AMP means)."""
    params, x, y = problem(rows=16)
    batches = batches_of(len(x))
    ref_params, ref_losses = reference.train_steps(params, [(x[i], y[i]) for i in batches], CFG)
    trainer = make_backend(dtype="float32").trainer(params, CFG, x, y, amp="bf16")
    trainer.run(batches)
    deviation = rel_err(trainer.predict(x), reference.forward(ref_params, x, CFG))
    assert 1e-5 < deviation < 0.1
    assert rel_err(trainer.losses(), np.array(ref_losses)) < 0.1


@pytest.mark.slow
def test_compiled_step_equals_eager():
    params, x, y = problem(rows=24)
    results = []
    for compiled in (False, True):
        trainer = make_backend(dtype="float32").trainer(params, CFG, x, y, compile=compiled)
        trainer.run(batches_of(len(x)))  # 8, 8, 8: one shape, one compilation
        results.append((np.array(trainer.losses()), trainer.predict(x)))
    assert rel_err(results[1][0], results[0][0]) < 1e-5
    assert rel_err(results[1][1], results[0][1]) < 1e-5


def assert_same_state(ours: dict, expected: dict) -> None:
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


@pytest.mark.parametrize("dtype, options", [
    ("float64", {}),
    ("float32", {}),
    ("float64", {"optimizer": "default"}),
    ("float32", {"optimizer": "foreach"}),
    ("float32", {"variant": "r2"}),
    ("float32", {"host_loop": True}),
    ("float32", {"amp": "bf16"}),
    pytest.param("float32", {"compile": True}, marks=pytest.mark.slow),
])
def test_state_round_trip_continues_bit_identically(dtype, options):
    """A fresh trainer (other parameters) that loads another's state takes the same next steps."""
    params, x, y = problem(rows=32)
    batches = batches_of(len(x))  # four batches of 8
    first = make_backend(dtype=dtype).trainer(params, CFG, x, y, **options)
    first.run(batches[:2])
    resumed = make_backend(dtype=dtype).trainer(spec.init_params(CFG, seed=9), CFG, x, y, **options)
    resumed.load_state(first.state())
    assert_same_state(resumed.state(), first.state())
    first.run(batches[2:])
    resumed.run(batches[2:])
    assert resumed.losses() == first.losses()[2:]
    assert_same_state(resumed.state(), first.state())


def test_loading_a_step_zero_state_forgets_the_moments():
    params, x, y = problem(rows=32)
    batches = batches_of(len(x))
    fresh = make_backend(dtype="float64").trainer(params, CFG, x, y)
    trained = make_backend(dtype="float64").trainer(params, CFG, x, y)
    trained.run(batches[:2])
    trained.load_state(fresh.state())
    assert int(trained.state()["step"]) == 0
    for trainer in (fresh, trained):
        trainer.run(batches)
    assert trained.losses()[2:] == fresh.losses()
    assert_same_state(trained.state(), fresh.state())


@pytest.mark.parametrize("dtype, options", [
    ("float64", {}),
    ("float64", {"optimizer": "default", "variant": "r3"}),
    ("float64", {"host_loop": True}),
    ("float32", {"amp": "bf16"}),
])
def test_gradients_are_the_step_s_own_and_take_no_step(dtype, options):
    params, x, y = problem(rows=19)
    batches = batches_of(len(x))
    probed = make_backend(dtype=dtype).trainer(params, CFG, x, y, **options)
    plain = make_backend(dtype=dtype).trainer(params, CFG, x, y, **options)
    loss, grads = probed.gradients(batches[0])
    for trainer in (probed, plain):
        trainer.run(batches)
    assert probed.losses() == plain.losses() and loss == plain.losses()[0]
    assert_same_state(probed.state(), plain.state())
    # The first AdamW step sets exp_avg = (1 - beta1) * gradient: the step used these gradients.
    first = make_backend(dtype=dtype).trainer(params, CFG, x, y, **options)
    first.step(batches[0])
    state = first.state()
    for name, grad in grads.items():
        if name in DEAD:
            assert not grad.any(), name
        np.testing.assert_allclose(state[f"exp_avg/{name}"], (1 - spec.BETAS[0]) * grad, rtol=1e-6,
                                   atol=1e-7 * np.abs(grad).max(), err_msg=name)


def test_optimizer_none_is_fused_and_only_amp_is_inexact():
    params, x, y = problem(rows=8)
    assert make_backend().trainer(params, CFG, x, y).optimizer.defaults["fused"]
    assert make_backend().inexact_options({"amp": "bf16", "compile": True, "variant": "r2"}) == ["amp=bf16"]


@pytest.mark.parametrize("options, message", [
    ({"bogus": 1}, "unknown option"),
    ({"variant": "r9"}, "variant"),
    ({"variant": "r1"}, "variant"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"amp": "fp16"}, "needs a CUDA device"),
    ({"cuda_graphs": True}, "needs device cuda"),
    ({"compile": "maybe"}, "true or false"),
    ({"threads": 0}, ">= 1"),
    ({"timeout_s": 0}, "> 0"),
    ({"parallel": "ddp"}, "torchrun"),
    ({"parallel": "pipeline"}, "parallel"),
])
def test_bad_trainer_options_are_one_line_value_errors(options, message, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    params, x, y = problem(rows=8)
    with pytest.raises(ValueError, match=message) as info:
        make_backend().trainer(params, CFG, x, y, **options)
    assert "\n" not in str(info.value)


def test_amp_needs_float32():
    params, x, y = problem(rows=8)
    with pytest.raises(ValueError, match="float32"):
        make_backend(dtype="float64").trainer(params, CFG, x, y, amp="bf16")


@pytest.mark.parametrize("idx, message", [
    (np.array([], dtype=np.int64), "non-empty 1-D"),
    (np.array([[0, 1]]), "non-empty 1-D"),
    (np.array([0.0, 1.0]), "non-empty 1-D"),
    (np.array([0, 8]), "out of range"),
    (np.array([-1]), "out of range"),
])
def test_bad_step_indices_are_refused(idx, message):
    params, x, y = problem(rows=8)
    with pytest.raises(ValueError, match=message):
        make_backend().trainer(params, CFG, x, y).step(idx)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_absent_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        backends.load("torch", device="cuda")


def test_absent_xla_names_the_separate_environment():
    # This environment has no torch_xla (it pins torch 2.9.0: `make xla-env`, tested by make xla-test).
    with pytest.raises(ValueError, match=r"pip install -e \.\[xla\]"):
        backends.load("torch", device="xla")
