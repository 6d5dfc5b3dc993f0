"""JAX-specific checks (the contract suite covers the generic surface of every backend).

Oracles: the float64 torch reference (`reference/`), the numpy AdamW of `spec.adamw_update`, and
single-device JAX training for the multi-device modes (run in a subprocess, because the number
of emulated CPU devices is fixed when JAX starts).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import jax  # noqa: E402

import backends  # noqa: E402
from backends import spec  # noqa: E402
from backends.jax import model, train, xla_flags  # noqa: E402
from backends.spec import TromptConfig  # noqa: E402
from tests.backends.problems import CFG, problem, rel_err  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
# 2 cells, so that "cells" mode splits them over 2 emulated devices.
CFG2 = TromptConfig(n_columns=13, n_prompts=7, d_model=6, n_cycles=2)
LR = 1e-2  # large, so that a few steps move the parameters visibly
pytestmark = pytest.mark.xdist_group("jax")  # one worker compiles the jax tests, the other is free


def live(cfg: TromptConfig) -> list[str]:
    return [k for k in spec.param_names(cfg) if k not in spec.dead_params(cfg)]


def batches_of(n_rows: int, seed: int = 2) -> list[np.ndarray]:
    """Batches of 8 rows and one short batch of 5 (padded to the compiled width)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    return [order[i:i + 8] for i in range(0, n_rows - 7, 8)] + [order[:5]]


def test_optax_adamw_matches_numpy_adamw_update_in_float64():
    """Optax configured by make_optimizer == torch-semantics AdamW (spec.adamw_update), 6 steps."""
    rng = np.random.default_rng(0)
    lr, wd = 1e-2, 0.1  # large, so that the decay and the bias corrections matter
    params = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(6)]
    with jax.enable_x64(True):
        optimizer = train.make_optimizer(lr, wd)
        state, opt_state = dict(params), optimizer.init(params)
        for g in grads:
            updates, opt_state = optimizer.update(g, opt_state, state)
            state = {k: np.asarray(v) for k, v in train.apply_adamw(state, updates, lr, wd).items()}
    expected = dict(params)
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    for step, g in enumerate(grads, start=1):
        for k in expected:
            expected[k], m, v = spec.adamw_update(expected[k], g[k], *moments[k], step, lr, wd)
            moments[k] = (m, v)
    for k in params:
        assert state[k].dtype == np.float64
        np.testing.assert_allclose(state[k], expected[k], rtol=1e-13, atol=1e-15)


def test_float32_decays_nothing_as_the_original_does():
    # 1 - lr * wd = 1 - 3e-9 is 1.0 in float32: torch's AdamW leaves a parameter with a zero
    # gradient untouched in float32, however small it is; so must this one.
    params = {"small": np.float32([1e-3, -2e-4, 5e-6]), "one": np.float32([1.0, -1.0, 0.5])}
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    with jax.enable_x64(False):
        optimizer = train.make_optimizer(spec.LR, spec.WEIGHT_DECAY)
        state, opt_state = dict(params), optimizer.init(params)
        for _ in range(100):
            updates, opt_state = optimizer.update(zero, opt_state, state)
            state = train.apply_adamw(state, updates, spec.LR, spec.WEIGHT_DECAY)
    for k, v in params.items():
        np.testing.assert_array_equal(np.asarray(state[k]), v, err_msg=k)
    torch = pytest.importorskip("torch")
    t = torch.tensor(params["small"], requires_grad=True)
    opt = torch.optim.AdamW([t], lr=spec.LR, weight_decay=spec.WEIGHT_DECAY)
    for _ in range(100):
        t.grad = torch.zeros_like(t)
        opt.step()
    np.testing.assert_array_equal(t.detach().numpy(), params["small"])  # the original, for comparison


@pytest.mark.parametrize("variant", model.VARIANTS)
def test_each_variant_matches_the_float64_reference(variant):
    """r5 (the default, hand backward), r5-autodiff and r3 are three code paths; all must give
    the reference's numbers."""
    p, x, y = problem(rows=5, seed=3)
    ref = backends.load("reference", dtype="float64")
    ref_loss, ref_grads = ref.loss_and_grad(p, x, y, CFG)
    b = backends.load("jax", dtype="float64")
    loss, grads = b.loss_and_grad(p, x, y, CFG, variant=variant)
    assert rel_err(b.forward(p, x, CFG, variant=variant), ref.forward(p, x, CFG)) < 1e-12
    assert abs(loss - ref_loss) < 1e-12 * abs(ref_loss)
    for k in live(CFG):
        assert grads[k].dtype == np.float64
        assert rel_err(grads[k], ref_grads[k]) < 1e-10, k


def test_parameter_layout_round_trips():
    p = spec.init_params(CFG, seed=5)
    back = model.from_pure_dict(model.to_pure_dict(p, CFG), CFG)
    assert list(back) == spec.param_names(CFG)  # canonical order
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
    # torch's Linear weight is (out, in); the Flax kernel is (in, out).
    pure = model.to_pure_dict(p, CFG)
    np.testing.assert_array_equal(pure["tcells"]["dense_imp"]["kernel"][1], p["tcells.1.dense_imp.weight"].T)
    # r5-fused stores W and Bias channels-major, (N, D, C); the canonical arrays come back (C, D).
    transposed = model.TRANSPOSED["r5-fused"]
    pure = model.to_pure_dict(p, CFG, transposed)
    assert pure["tcells"]["feature_emb_weight"].shape == (CFG.n_cycles, CFG.d_model, CFG.n_columns)
    np.testing.assert_array_equal(pure["tcells"]["feature_emb_bias"][1], p["tcells.1.feature_emb_bias"].T)
    back = model.from_pure_dict(pure, CFG, transposed)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])


@pytest.mark.slow
def test_trainer_scan_padding_and_remainder_match_torch_adamw_in_float64():
    """7 batches, 3 steps per lax.scan (2 scans + 1 single step), one short batch padded with
    weight-0 rows: must follow the reference's torch.optim.AdamW step by step, and its state
    must hold the same moments and step count under the same names."""
    p, x, y = problem(rows=40, seed=4)
    batches = batches_of(40) + [batches_of(40)[1]]
    ref = backends.load("reference", dtype="float64")
    ref_state: dict = {}
    ref_params, ref_losses = ref.train_steps(p, [(x[b], y[b]) for b in batches], CFG, lr=LR, state=ref_state)

    trainer = backends.load("jax", dtype="float64").trainer(p, CFG, x, y, lr=LR, steps_per_call=3)
    trainer.run(batches[:4])  # one scan + one single step
    trainer.step(batches[4])
    trainer.run(batches[5:])
    trainer.sync()
    np.testing.assert_allclose(trainer.losses(), ref_losses, rtol=1e-11)
    params = trainer.params()
    for k in live(CFG):
        assert params[k].dtype == np.float64
        assert rel_err(params[k] - p[k], ref_params[k] - p[k]) < 1e-8, k  # the update itself
    assert rel_err(trainer.predict(x), ref.forward(ref_params, x, CFG)) < 1e-10
    assert trainer.compile_seconds > 0
    state = trainer.state()
    assert int(state["step"]) == int(ref_state["step"]) == len(batches)
    for k in live(CFG):
        assert rel_err(state[f"exp_avg/{k}"], ref_state[f"exp_avg/{k}"]) < 1e-8, k
        assert rel_err(state[f"exp_avg_sq/{k}"], ref_state[f"exp_avg_sq/{k}"]) < 1e-8, k


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_trainer_loaded_from_another_continues_bit_identically(dtype):
    """state() -> load_state() into a trainer started elsewhere, then the same batches through
    scans of 3 and single-step remainders: every loss, parameter and moment equal to the bit."""
    p, x, y = problem(rows=40, seed=5)
    batches = batches_of(40)  # 4 of 8 rows, then one of 5
    b = backends.load("jax", dtype=dtype)
    first = b.trainer(p, CFG, x, y, lr=LR, steps_per_call=3)
    first.run(batches[:4])  # one scan of 3 + one single step: moments and bias corrections set
    second = b.trainer(spec.init_params(CFG, seed=9), CFG, x, y, lr=LR, steps_per_call=3)
    saved = first.state()
    second.load_state(saved)
    assert int(saved["step"]) == 4 and saved["param/prompt"].dtype == dtype
    later = batches[::-1]  # a scan of 3, then two single steps (one of them the short batch)
    first.run(later)
    second.run(later)
    assert first.losses()[4:] == second.losses()
    a, b2 = first.state(), second.state()
    assert sorted(a) == sorted(b2) == sorted(saved)
    for k in a:
        np.testing.assert_array_equal(b2[k], a[k], err_msg=k)
    np.testing.assert_array_equal(second.predict(x), first.predict(x))


def test_options_are_declared_once_with_their_exact_values():
    b = backends.load("jax")
    assert [o.name for o in b.options] == ["variant", "steps_per_call", "precision", "parallel", "n_devices"]
    assert b.parse_options({"steps_per_call": "3", "precision": "high"})["steps_per_call"] == 3
    assert b.inexact_options({"precision": "default", "variant": "r3"}) == ["precision=default"]


def test_float32_results_are_unchanged_by_float64_use_in_the_same_process():
    p, x, _ = problem(rows=4, seed=6)
    b32 = backends.load("jax", dtype="float32")
    before = b32.forward(p, x, CFG)
    out64 = backends.load("jax", dtype="float64").forward(p, x, CFG)
    after = b32.forward(p, x, CFG)
    assert before.dtype == np.float32 and out64.dtype == np.float64
    np.testing.assert_array_equal(before, after)
    assert not jax.config.jax_enable_x64  # x64 is scoped to the float64 backend's calls
    assert rel_err(before, out64) < 1e-5


@pytest.mark.parametrize("device", ["tpu", "gpu"])
def test_absent_device_is_a_one_line_error_naming_what_jax_sees(device):
    if jax.default_backend() != "cpu":
        pytest.skip("this machine has an accelerator")
    with pytest.raises(ValueError, match=f"device '{device}' requested but JAX sees only: cpu") as info:
        backends.load("jax", device=device)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"no_such_option": 1}, "no_such_option"),
    ({"parallel": "ddp"}, "parallel='ddp' is not one of"),
    ({"variant": "r9"}, "variant='r9' is not one of"),
    ({"precision": "fast"}, "precision='fast' is not one of"),
    ({"steps_per_call": 0}, "steps_per_call must be >= 1"),
    ({"parallel": "sharding", "n_devices": 64}, "n_devices=64 but JAX sees"),
    ({"n_devices": 2}, "n_devices > 1 needs a parallel mode"),
    ({"n_devices": -1}, "n_devices must be >= 0"),
])
def test_bad_trainer_options_are_one_line_errors(options, message):
    p, x, y = problem(rows=8)
    b = backends.load("jax")
    with pytest.raises(ValueError, match=message) as info:
        b.trainer(p, CFG, x, y, **options)
    assert "\n" not in str(info.value)


def test_bad_batch_indices_are_one_line_errors():
    p, x, y = problem(rows=8)
    trainer = backends.load("jax").trainer(p, CFG, x, y)
    for bad in (np.array([0, 8]), np.array([], dtype=int), np.array([[0, 1]]), np.array([-1])):
        with pytest.raises(ValueError, match="row ind") as info:
            trainer.step(bad)
        assert "\n" not in str(info.value)
    assert trainer.losses() == []  # nothing ran, nothing compiled


@pytest.mark.parametrize("platforms, plugin, expected", [
    ("", None, True),  # nothing but the CPU installed
    ("", "libtpu", False),  # JAX would pick the TPU
    ("", "jax_cuda12_plugin", False),
    ("cpu", "libtpu", True),  # the CPU asked for explicitly
    ("tpu", None, False),
    ("cpu,tpu", None, False),
])
def test_the_cpu_flag_is_added_only_where_the_cpu_is_the_platform(platforms, plugin, expected):
    """In a fresh process (XLA_FLAGS is read once, when JAX starts): the flag is added before
    JAX is imported where the CPU computes, and left out where an accelerator plugin may read it."""
    fake_plugin = f"import importlib.util as u; real = u.find_spec; " \
                  f"u.find_spec = lambda n, *a: object() if n == {plugin!r} else real(n, *a); "
    script = fake_plugin + "import os, sys; import backends.jax.xla_flags; " \
                           "print('jax' in sys.modules, os.environ.get('XLA_FLAGS', ''))"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env.update({"JAX_PLATFORMS": platforms, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                "PYTHONPATH": str(ROOT)})
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jax_imported, flags = proc.stdout.split(" ", 1)
    assert jax_imported == "False"
    assert "--xla_force_host_platform_device_count=2" in flags  # the user's flags are kept
    assert (xla_flags.CPU_XLA_FLAG in flags) == expected


def test_the_cpu_flag_is_not_added_once_jax_is_imported(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")
    assert not xla_flags.apply_cpu_xla_flag()  # XLA would no longer read it
    assert os.environ["XLA_FLAGS"] == ""


# Two emulated devices are two threads of one process: on a loaded 2-core machine one can reach
# an all-reduce more than XLA's default 40 s after the other, and XLA then aborts the process.
MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=2 "
                               "--xla_cpu_collective_call_terminate_timeout_seconds=600")
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import backends
    from backends import spec
    from backends.spec import TromptConfig
    cfg = TromptConfig(**json.loads(sys.argv[2]))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(21, cfg.n_columns)) * 3
    y = rng.normal(size=21)
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 21)]  # global batch 8, then 5
    out = {}

    def as_lists(d):
        return {k: np.asarray(v).tolist() for k, v in d.items()}

    for dtype in ("float32", "float64"):
        b = backends.load("jax", dtype=dtype)  # first: the backend sets XLA_FLAGS before jax starts
        for mode in ("none", "sharding", "pmap", "cells"):
            # 2 steps per scan and a remainder step; then the state handed to a second trainer.
            first = b.trainer(spec.init_params(cfg, 7), cfg, x, y, lr=1e-2, parallel=mode, steps_per_call=2)
            first.run(batches)
            loss, grads = first.gradients(np.arange(3, 16))
            got = {"n_devices": len(first.placement.devices), "losses": first.losses(),
                   "params": as_lists(first.params()), "predict": first.predict(x[:6]).tolist(),
                   "grad_loss": loss, "grads": as_lists(grads)}
            second = b.trainer(spec.init_params(cfg, 8), cfg, x, y, lr=1e-2, parallel=mode, steps_per_call=2)
            second.load_state(first.state())
            later = batches[::-1]
            first.run(later)
            second.run(later)
            a, b2 = first.state(), second.state()
            got["round_trip_bit_identical"] = bool(first.losses()[3:] == second.losses()) and all(
                np.array_equal(a[k], b2[k]) for k in a)
            got["round_trip_step"] = int(b2["step"])
            out[f"{dtype}/{mode}"] = got
    import jax
    out.update(n_jax_devices=len(jax.devices()), xla_flags=os.environ["XLA_FLAGS"])
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_multi_device_modes_equal_single_device_training_on_two_emulated_cpus():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(ROOT), json.dumps(CFG2.to_dict())],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["n_jax_devices"] == 2
    assert "ynn_fusion_type" in out["xla_flags"]  # the backend added its CPU flag, kept the count
    for dtype, tol in (("float32", 1e-5), ("float64", 1e-12)):
        single = out[f"{dtype}/none"]
        assert single["n_devices"] == 1
        for mode in ("none", "sharding", "pmap", "cells"):
            got, where = out[f"{dtype}/{mode}"], f"{dtype}/{mode}"
            assert got["round_trip_bit_identical"] and got["round_trip_step"] == 6, where
            if mode == "none":
                continue
            assert got["n_devices"] == 2, where
            np.testing.assert_allclose(got["losses"], single["losses"], rtol=tol, err_msg=where)
            for k in live(CFG2):
                a, ref = np.array(got["params"][k]), np.array(single["params"][k])
                assert np.max(np.abs(a - ref)) <= tol * max(np.max(np.abs(ref)), 1.0), (where, k)
                assert rel_err(got["grads"][k], np.array(single["grads"][k])) < tol * 10, (where, k)
            assert abs(got["grad_loss"] - single["grad_loss"]) <= tol * abs(single["grad_loss"]), where
            assert rel_err(got["predict"], np.array(single["predict"])) < tol, where


def test_a_remainder_goes_through_the_shorter_scan_then_single_steps(monkeypatch):
    """steps_per_call=12 and 23 steps: one scan of 12, one of REMAINDER_SCAN (8), three single
    steps, following the reference's AdamW step by step in float64."""
    assert train.REMAINDER_SCAN == 8
    p, x, y = problem(rows=40, seed=6)
    batches = (batches_of(40) * 5)[:23]
    ref_params, ref_losses = backends.load("reference", dtype="float64").train_steps(
        p, [(x[b], y[b]) for b in batches], CFG, lr=LR, state={})
    trainer = backends.load("jax", dtype="float64").trainer(p, CFG, x, y, lr=LR, steps_per_call=12)
    dispatched, dispatch = [], trainer._dispatch
    monkeypatch.setattr(trainer, "_dispatch", lambda chunk, width: (dispatched.append(len(chunk)),
                                                                     dispatch(chunk, width)))
    trainer.run(batches)
    assert dispatched == [12, 8, 1, 1, 1]
    assert trainer.timed_steps_multiple() == 8
    np.testing.assert_allclose(trainer.losses(), ref_losses, rtol=1e-11)
    params = trainer.params()
    for k in live(CFG):
        assert rel_err(params[k] - p[k], ref_params[k] - p[k]) < 1e-8, k
