"""JAX-specific checks (the shared parity test covers forward/grad/AdamW through the numpy API).

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
from backends.jax import model, train  # noqa: E402
from backends.spec import TromptConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# Small and odd-sized (a swapped axis cannot pass by accident); 2 cells so "cells" mode can split.
CFG = TromptConfig(n_columns=13, n_prompts=7, d_model=6, n_cycles=2)
pytestmark = pytest.mark.xdist_group("jax")  # one worker compiles the jax tests, the other is free


def rel_dev(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-300))


def live(cfg: TromptConfig) -> list[str]:
    return [k for k in spec.param_names(cfg) if k not in spec.dead_params(cfg)]


def toy_data(n_rows: int, cfg: TromptConfig = CFG, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, cfg.n_columns)) * rng.choice([1.0, 30.0], size=cfg.n_columns)
    x[rng.random(x.shape) < 0.1] = 0.0  # raw features with zeros and large columns, like the data
    return x.astype(np.float32), rng.normal(size=n_rows).astype(np.float32)


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
            state = {k: state[k] + np.asarray(updates[k]) for k in state}
    expected = dict(params)
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    for step, g in enumerate(grads, start=1):
        for k in expected:
            expected[k], m, v = spec.adamw_update(expected[k], g[k], *moments[k], step, lr, wd)
            moments[k] = (m, v)
    for k in params:
        assert state[k].dtype == np.float64
        np.testing.assert_allclose(state[k], expected[k], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("variant", model.VARIANTS)
def test_each_variant_matches_the_float64_reference(variant):
    """r5 (the default) and r3 are two code paths; both must give the reference's numbers."""
    p = spec.init_params(CFG, seed=3, dtype="float64")
    x, y = toy_data(5)
    ref = backends.load("reference", dtype="float64")
    ref_loss, ref_grads = ref.loss_and_grad(p, x, y, CFG)
    with train.numerics("float64"):
        graphdef, state = model.build(p, CFG, "float64")
        pred = np.asarray(jax.jit(model.forward, static_argnums=(0, 3))(graphdef, state, x, variant))
        loss_and_grad = jax.jit(jax.value_and_grad(model.loss_fn), static_argnums=(1, 6))
        loss, grads = loss_and_grad(state, graphdef, x.astype(np.float64), y.astype(np.float64),
                                    np.ones(5), 5.0, variant)
        grads = model.state_to_numpy(grads, CFG)
    assert rel_dev(pred, ref.forward(p, x, CFG)) < 1e-12
    assert abs(float(loss) - ref_loss) < 1e-12 * abs(ref_loss)
    for k in live(CFG):
        assert rel_dev(grads[k], ref_grads[k]) < 1e-10, k


def test_parameter_layout_round_trips():
    p = spec.init_params(CFG, seed=5)
    back = model.from_pure_dict(model.to_pure_dict(p, CFG), CFG)
    assert list(back) == spec.param_names(CFG)  # canonical order
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
    # torch's Linear weight is (out, in); the Flax kernel is (in, out).
    pure = model.to_pure_dict(p, CFG)
    np.testing.assert_array_equal(pure["tcells"]["dense_imp"]["kernel"][1], p["tcells.1.dense_imp.weight"].T)


@pytest.mark.slow
def test_trainer_scan_padding_and_remainder_match_torch_adamw_in_float64():
    """7 batches, 3 steps per lax.scan (2 scans + 1 single step), one short batch padded with
    weight-0 rows: must follow the reference's torch.optim.AdamW step by step."""
    x, y = toy_data(40)
    order = np.random.default_rng(2).permutation(40)
    batches = [order[i:i + 8] for i in range(0, 40, 8)] + [order[:5], order[8:16]]  # a 5-row batch
    p = spec.init_params(CFG, seed=4, dtype="float64")
    lr = 1e-2  # large, so that 7 steps move the parameters visibly
    ref = backends.load("reference", dtype="float64")
    ref_params, ref_losses = ref.train_steps(p, [(x[b], y[b]) for b in batches], CFG, lr=lr)

    trainer = backends.load("jax", dtype="float64").trainer(p, CFG, x, y, lr=lr, steps_per_call=3)
    trainer.run(batches[:4])  # one scan + one single step
    trainer.step(batches[4])
    trainer.run(batches[5:])
    trainer.sync()
    np.testing.assert_allclose(trainer.losses(), ref_losses, rtol=1e-11)
    params = trainer.params()
    for k in live(CFG):
        assert params[k].dtype == np.float64
        assert rel_dev(params[k] - p[k], ref_params[k] - p[k]) < 1e-8, k  # the update itself
    assert rel_dev(trainer.predict(x), ref.forward(ref_params, x, CFG)) < 1e-10
    assert trainer.compile_seconds > 0


def test_float32_results_are_unchanged_by_float64_use_in_the_same_process():
    p = spec.init_params(CFG, seed=6)
    x, _ = toy_data(4)
    b32 = backends.load("jax", dtype="float32")
    before = b32.forward(p, x, CFG)
    out64 = backends.load("jax", dtype="float64").forward(p, x, CFG)
    after = b32.forward(p, x, CFG)
    assert before.dtype == np.float32 and out64.dtype == np.float64
    np.testing.assert_array_equal(before, after)
    assert not jax.config.jax_enable_x64  # x64 is scoped to the float64 backend's calls
    assert rel_dev(before, out64) < 1e-5


@pytest.mark.parametrize("device", ["tpu", "gpu"])
def test_absent_device_is_a_one_line_error_naming_what_jax_sees(device):
    if jax.default_backend() != "cpu":
        pytest.skip("this machine has an accelerator")
    with pytest.raises(ValueError, match=f"device '{device}' requested but JAX sees only: cpu") as info:
        backends.load("jax", device=device)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"no_such_option": 1}, "no_such_option"),
    ({"parallel": "ddp"}, "unknown parallel mode 'ddp'"),
    ({"variant": "r9"}, "unknown variant 'r9'"),
    ({"precision": "fast"}, "unknown precision"),
    ({"steps_per_call": 0}, "steps_per_call"),
    ({"parallel": "sharding", "n_devices": 64}, "n_devices=64"),
    ({"n_devices": -1}, "n_devices"),
])
def test_bad_trainer_options_are_one_line_errors(options, message):
    x, y = toy_data(8)
    b = backends.load("jax")
    with pytest.raises(ValueError, match=message) as info:
        b.trainer(spec.init_params(CFG), CFG, x, y, **options)
    assert "\n" not in str(info.value)


def test_bad_batch_indices_are_one_line_errors():
    x, y = toy_data(8)
    trainer = backends.load("jax").trainer(spec.init_params(CFG), CFG, x, y)
    for bad in (np.array([0, 8]), np.array([], dtype=int), np.array([[0, 1]]), np.array([-1])):
        with pytest.raises(ValueError, match="row indices") as info:
            trainer.step(bad)
        assert "\n" not in str(info.value)
    assert trainer.losses() == []  # nothing ran, nothing compiled


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import backends
    from backends import spec
    from backends.spec import TromptConfig
    cfg = TromptConfig(**json.loads(sys.argv[2]))
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(21, cfg.n_columns)) * 3).astype(np.float32)
    y = rng.normal(size=21).astype(np.float32)
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 21)]  # global batch 8, then 5
    b = backends.load("jax")
    import jax
    out = {"n_jax_devices": len(jax.devices()), "xla_flags": os.environ["XLA_FLAGS"]}
    for mode in ("none", "sharding", "pmap", "cells"):
        t = b.trainer(spec.init_params(cfg, 7), cfg, x, y, lr=1e-2, parallel=mode, steps_per_call=1)
        t.run(batches)
        out[mode] = {"n_devices": len(t.placement.devices), "losses": t.losses(),
                     "params": {k: v.tolist() for k, v in t.params().items()},
                     "predict": t.predict(x[:6]).tolist()}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_multi_device_modes_equal_single_device_training_on_two_emulated_cpus():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(ROOT), json.dumps(CFG.to_dict())],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["n_jax_devices"] == 2
    assert "ynn_fusion_type" in out["xla_flags"]  # the backend added its CPU flag, kept the count
    single = out["none"]
    assert single["n_devices"] == 1
    for mode in ("sharding", "pmap", "cells"):
        got = out[mode]
        assert got["n_devices"] == 2, mode
        np.testing.assert_allclose(got["losses"], single["losses"], rtol=1e-5, err_msg=mode)
        for k in live(CFG):
            a, ref = np.array(got["params"][k]), np.array(single["params"][k])
            assert np.max(np.abs(a - ref)) <= 1e-5 * max(np.max(np.abs(ref)), 1.0), (mode, k)
        assert rel_dev(np.array(got["predict"]), np.array(single["predict"])) < 1e-5, mode
