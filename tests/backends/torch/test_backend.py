"""Torch-specific checks of backends/torch against the float64 reference (the generic parity test
over every backend lives in tests/test_backend_parity.py).

Oracles: the faithful reference model (float64), and for the dead parameters of F7 the closed
form of AdamW with a zero gradient (pure weight decay).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import backends  # noqa: E402
from backends import spec  # noqa: E402
from backends.torch import make_backend  # noqa: E402
from backends.torch.model import VARIANTS  # noqa: E402
from tests.backends.problems import CFG, DEAD, problem, rel_err  # noqa: E402


@pytest.fixture(scope="module")
def reference() -> backends.Backend:
    return backends.load("reference", dtype="float64")



@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_forward_loss_and_every_gradient(variant, dtype, tol, reference):
    params, x, y = problem(rows=5)
    ours = make_backend(dtype=dtype, variant=variant)
    assert rel_err(ours.forward(params, x, CFG), reference.forward(params, x, CFG)) < tol
    loss, grads = ours.loss_and_grad(params, x, y, CFG)
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


@pytest.mark.parametrize("options, message", [
    ({"bogus": 1}, "unknown torch trainer option"),
    ({"variant": "r9"}, "variant"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"amp": "fp16"}, "needs a CUDA device"),
    ({"cuda_graphs": True}, "needs device cuda"),
    ({"compile": "yes"}, "true or false"),
    ({"threads": 0}, "positive int"),
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
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"pip install -e \.\[xla\]"):
            backends.load("torch", device="xla")
    else:
        pytest.skip("torch_xla is installed here")


def test_unknown_variant_at_load():
    with pytest.raises(ValueError, match="unknown variant"):
        make_backend(variant="r1")


def test_xla_device_matches_reference_when_torch_xla_is_installed(reference, monkeypatch):
    """Runs only in the separate torch 2.9 + torch_xla environment, on the CPU PJRT device."""
    pytest.importorskip("torch_xla")
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    params, x, y = problem(rows=5)
    ours = backends.load("torch", device="xla")
    assert rel_err(ours.forward(params, x, CFG), reference.forward(params, x, CFG)) < 1e-4
    _, grads = ours.loss_and_grad(params, x, y, CFG)
    _, ref_grads = reference.loss_and_grad(params, x, y, CFG)
    for name in ref_grads.keys() - DEAD:
        assert rel_err(grads[name], ref_grads[name]) < 1e-4, name
    trainer = ours.trainer(params, CFG, x, y)
    trainer.run(batches_of(len(x), size=2))
    assert np.isfinite(trainer.losses()).all()
