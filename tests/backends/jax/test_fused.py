"""JAX's variant r5-fused: r5 with its passes over H in the shared C++ kernels, through XLA's FFI.

Oracles: the float64 reference trainer (through bench check) and JAX's own r5, which computes the
same function with XLA's code (H materialised), on odd shapes: one row, an odd batch, C spanning
several 32-column tasks with a remainder, D odd and past 128 (the pool forward's 4-channel blocks
leave three over); and, for a single cell called without vmap, the formulas written out in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

import jax  # noqa: E402

import backends  # noqa: E402
from backends import spec  # noqa: E402
from backends.jax import fused  # noqa: E402
from bench import check  # noqa: E402
from tests.backends.problems import CFG, problem, rel_err  # noqa: E402
from tests.contract.round_trip import assert_continues_bit_identically  # noqa: E402

LANES = 32  # columns per task in backends/fused_block.h
WIDE = spec.TromptConfig(n_columns=2 * LANES + 5, n_prompts=5, d_model=10, n_cycles=2)
DEEP = spec.TromptConfig(n_columns=LANES + 7, n_prompts=3, d_model=131, n_cycles=1)
# Past the mask kernels' 8-row tiles (prompts and batch) and 32-column panels (columns and channels).
PROMPTS = spec.TromptConfig(n_columns=LANES + 1, n_prompts=17, d_model=33, n_cycles=2)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bench_check_passes(dtype):
    result = check.check_trainer("jax", dtype=dtype, options={"variant": "r5-fused"})
    assert result["verdict"] == "pass", check.format_report(result)


def raw_rows(cfg: spec.TromptConfig, rows: int, seed: int) -> np.ndarray:
    """Raw-scale features (a few large columns, some zeros): the relu mask matters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cfg.n_columns)) * np.where(rng.random(cfg.n_columns) < 0.3, 20.0, 1.0)
    x[rng.random(x.shape) < 0.1] = 0.0
    return x


@pytest.mark.parametrize("cfg, rows", [(WIDE, 1), (WIDE, 9), (DEEP, 5), (PROMPTS, 9)])
def test_fused_equals_xla_r5_in_float64(cfg, rows):
    params = spec.init_params(cfg, seed=rows, dtype="float64")
    x = raw_rows(cfg, rows, seed=rows)
    y = np.random.default_rng(rows).normal(size=rows)
    b = backends.load("jax", dtype="float64")
    assert rel_err(b.forward(params, x, cfg, variant="r5-fused"), b.forward(params, x, cfg)) < 1e-13
    loss, grads = b.loss_and_grad(params, x, y, cfg, variant="r5-fused")
    want_loss, want = b.loss_and_grad(params, x, y, cfg)
    assert abs(loss - want_loss) < 1e-13 * abs(want_loss)
    for name in spec.param_names(cfg):
        if name not in spec.dead_params(cfg):
            assert rel_err(grads[name], want[name]) < 1e-11, name


def test_its_channels_major_state_leaves_in_the_canonical_layout_and_continues_bit_identically():
    # W and Bias live (N, D, C) in this variant's state; parameters and checkpoints leave (C, D).
    params, x, y = problem(rows=16)
    b = backends.load("jax", dtype="float64")
    trainer = b.trainer(params, CFG, x, y, variant="r5-fused", steps_per_call=2)
    for name, value in trainer.params().items():
        assert np.array_equal(value, params[name]), name
    batches = [np.arange(8), np.arange(8, 16), np.arange(4, 12), np.arange(3)]
    assert_continues_bit_identically(b, CFG, x, y, batches, variant="r5-fused", steps_per_call=2)


def test_one_cell_without_vmap_matches_the_formulas():
    # The kernels' short shapes (x (B, C), W (D, C)), against numpy in float64.
    rng = np.random.default_rng(0)
    B, C, D = 3, LANES + 3, 7
    x, w, b = rng.normal(size=(B, C)), rng.uniform(-1, 1, (C, D)), rng.uniform(-1, 1, (C, D))
    u, q = rng.normal(size=D), rng.normal(size=(B, C))
    with jax.enable_x64(True):
        mean, rstd, t_raw = (np.asarray(a) for a in fused.stats_forward(x, w, b, u))
        h = np.maximum(x[:, :, None] * w + b, 0.0)
        dev = h - h.mean(-1, keepdims=True)
        assert np.allclose(mean, h.mean(-1), rtol=1e-13, atol=0)
        assert np.allclose(rstd, 1 / np.sqrt((dev ** 2).mean(-1) + spec.LN_EPS), rtol=1e-13, atol=0)
        assert np.allclose(t_raw, dev @ u, rtol=1e-12, atol=1e-13)
        z = np.asarray(fused.pool_forward(x, w, b, mean, q))
        assert np.allclose(z, np.einsum("bc,bcd->bd", q, dev), rtol=1e-12, atol=1e-13)


def test_the_mask_of_one_cell_without_vmap_matches_jax_autodiff():
    # The mask kernels' short shapes (Q (P, D), K (C, D), t (B, C)), against the same function in
    # jax.numpy, differentiated by JAX, in float64.
    rng = np.random.default_rng(1)
    B, P, C, D = 9, 10, LANES + 5, 6
    args = (rng.normal(size=(P, D)), rng.normal(size=(C, D)), rng.normal(size=(B, C)),
            1 + 0.1 * rng.normal(size=P), rng.normal(size=P), rng.normal(size=P))

    def in_jax(query, key, t, s, shift, e):
        mask = jax.nn.softmax(query @ key.T, axis=-1)
        weights = jax.nn.softmax(s * (t @ mask.T) + shift, axis=-1)
        return (weights * s) @ mask, weights @ e

    with jax.enable_x64(True):
        (alpha, offset), vjp = jax.vjp(in_jax, *args)
        got = fused.mask_forward(*args)
        assert rel_err(got[0], alpha) < 1e-13 and rel_err(got[1][:, 0], offset) < 1e-13
        g_alpha, g_offset = rng.normal(size=(B, C)), rng.normal(size=B)
        want = vjp((g_alpha, g_offset))
        query, key, t, s, _, e = args
        grads = fused.mask_backward(query, key, t, s, e, *got[2:], g_alpha, g_offset[:, None])
        for name, ours, ref in zip(("Q", "K", "t", "s", "shift", "e"), grads, want):
            assert rel_err(ours, ref) < 1e-12, name


def test_other_devices_and_parallel_modes_are_refused():
    params, x, y = problem(rows=2)
    with pytest.raises(ValueError, match=r"r5-fused runs on the CPU only .* parallel=pmap"):
        backends.load("jax").trainer(params, CFG, x, y, variant="r5-fused", parallel="pmap")


def test_a_failed_build_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no cached build
    monkeypatch.setenv("PATH", "/nonexistent")  # and no compiler
    fused.register.cache_clear()
    params, x, y = problem(rows=2)
    try:
        with pytest.raises(ValueError, match=r"^the r5-fused C\+\+ kernels could not be built \(.*g\+\+\); "
                                             r"they need g\+\+$"):
            backends.load("jax").trainer(params, CFG, x, y, variant="r5-fused")
        monkeypatch.undo()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        broken = tmp_path / "broken.cpp"
        broken.write_text("this is not C++\n")
        monkeypatch.setattr(fused, "SOURCE", broken)
        with pytest.raises(fused.KernelBuildError, match=r"could not be built \(.*error.*\)$"):
            fused.register()
        assert [p.name for p in (tmp_path / "trompt-bench").iterdir()] == []  # no partial file left
    finally:
        fused.register.cache_clear()


def test_the_build_is_named_by_its_sources(monkeypatch, tmp_path):
    # A changed source must not load the old binary: the file name carries the sources' hash.
    edited = tmp_path / "fused_block_ffi.cpp"
    edited.write_text(fused.SOURCE.read_text() + "// edited\n")
    before = fused.library_path()
    monkeypatch.setattr(fused, "SOURCE", edited)
    assert fused.library_path() != before and fused.library_path().parent == before.parent


def test_the_op_profile_shows_the_custom_calls_of_the_fused_variant_only():
    # op_times traces XLA's own ops: r5-fused's passes over H and its mask are FFI custom calls, r5's are not.
    params, x, y = problem(rows=16)
    batches = [np.arange(8), np.arange(8, 16)]
    names = {}
    for variant in ("r5", "r5-fused"):
        trainer = backends.load("jax").trainer(params, CFG, x, y, variant=variant, steps_per_call=2)
        trainer.run(batches)  # compiles outside the trace
        ops = trainer.op_times(batches)
        assert sum(t for _, t, _ in ops) > 0 and all(t >= 0 and calls >= 1 for _, t, calls in ops)
        assert [t for _, t, _ in ops] == sorted((t for _, t, _ in ops), reverse=True)
        names[variant] = {name for name, _, _ in ops}
    assert not any(n.startswith("ffi_call") for n in names["r5"])
    # stats, pool, g_q, block backward, mask forward and backward
    assert sum(n.startswith("ffi_call") for n in names["r5-fused"]) == 6
