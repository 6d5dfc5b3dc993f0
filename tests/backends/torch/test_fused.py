"""The fused embedding kernels of backends/torch/fused.py and the variant r5-fused built on them.

Oracles: the float64 reference trainer (through bench check), torch's finite differences
(gradcheck) for the two autograd Functions chained and for the first alone, and torch r5, which
computes the same function with H materialised, on odd shapes (one row, a short batch, an odd
batch, D odd and past 128, C spanning several 32-column tasks with a remainder, and columns past
the pool forward's 16-column vectors).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import backends  # noqa: E402
from backends import spec  # noqa: E402
from backends.torch import fused, model  # noqa: E402
from bench import check  # noqa: E402
from tests.backends.problems import CFG, problem  # noqa: E402
from tests.contract.round_trip import assert_continues_bit_identically  # noqa: E402

# Several column blocks and a remainder block of 5 columns.
WIDE = spec.TromptConfig(n_columns=2 * fused.LANES + 5, n_prompts=5, d_model=10, n_cycles=2)
# An odd number of channels past 128: the pool forward's 4-channel blocks leave three over.
DEEP = spec.TromptConfig(n_columns=fused.LANES + 7, n_prompts=3, d_model=131, n_cycles=1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bench_check_passes(dtype):
    result = check.check_trainer("torch", dtype=dtype, options={"variant": "r5-fused"})
    assert result["verdict"] == "pass", check.format_report(result)
    assert result["dead_param_grad_max"] == 0.0


def inputs(N: int, B: int, C: int, D: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Raw-scale x (some zeros, a few large columns) and weights as initialised: about half of
    the pre-activations are negative, so the relu mask matters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, C)) * np.where(rng.random(C) < 0.3, 20.0, 1.0)
    x[rng.random(x.shape) < 0.1] = 0.0
    arrays = {"x": x, "w": rng.uniform(-1, 1, (N, D, C)), "bias": rng.uniform(-1, 1, (N, D, C)),
              "u": rng.normal(size=(N, D)), "mean": rng.random((N, B, C)), "q": rng.normal(size=(N, B, C))}
    return {k: torch.tensor(a, dtype=torch.float64, requires_grad=True) for k, a in arrays.items()}


def stats_then_pool(x, w, bias, u, extra):
    """The two Functions chained as in r5-fused, with a made-up middle so that q depends on the
    stats: the pool's share of the gradients of x, W and Bias reaches them through the handoff."""
    mean, rstd, t_raw, handoff = fused.embed_stats(x, w, bias, u)
    q = torch.tanh(t_raw) * rstd + extra
    z = fused.embed_pool(x, w, bias, mean, q, handoff)
    return z * mean.sum(-1, keepdim=True), t_raw


@pytest.mark.parametrize("N, B, C, D", [(2, 3, 5, 7), (1, 2, fused.LANES + 3, 5), (1, 5, 9, 131)])
def test_gradcheck_of_the_block(N, B, C, D):
    t = inputs(N, B, C, D)
    assert torch.autograd.gradcheck(stats_then_pool, (t["x"], t["w"], t["bias"], t["u"], t["q"]))
    # EmbedStats alone: no pool, so a zero handoff gradient and no pool share.
    assert torch.autograd.gradcheck(lambda *a: fused.embed_stats(*a)[:3], (t["x"], t["w"], t["bias"], t["u"]))


def mask_inputs(N: int, B: int, P: int, C: int, D: int, dtype: torch.dtype = torch.float64
                ) -> tuple[torch.Tensor, ...]:
    """Q, K, t, s, shift, e for fused.mask_pool: logits of order one, as at initialisation."""
    rng = np.random.default_rng(2)
    arrays = (rng.normal(size=(N, P, D)) / np.sqrt(D), rng.normal(size=(N, C, D)), rng.normal(size=(N, B, C)),
              1 + 0.1 * rng.normal(size=(N, P)), rng.normal(size=(N, P)), rng.normal(size=(N, P)))
    return tuple(torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays)


def mask_pool_in_torch(query, key, t, scale, shift, expand_bias):
    """The same function from torch's own ops, written out from the definitions in fused.py."""
    mask = torch.softmax(query @ key.transpose(1, 2), dim=-1)  # (N, P, C)
    weights = torch.softmax(scale.unsqueeze(1) * (t @ mask.transpose(1, 2)) + shift.unsqueeze(1), dim=-1)
    alpha = (weights * scale.unsqueeze(1)) @ mask
    return alpha, (weights * expand_bias.unsqueeze(1)).sum(-1, keepdim=True)


# Shapes around the kernels' blocks: 8-row tiles (B and P one past), 32-column panels (C and D one
# past), a single row and column, and the model's full size.
MASK_SHAPES = [(2, 9, 9, 33, 33), (1, 1, 1, 1, 1), (3, 8, 16, 64, 32), (1, 3, 17, 70, 131)]


@pytest.mark.parametrize("N, B, P, C, D", MASK_SHAPES[:2])
def test_gradcheck_of_the_mask(N, B, P, C, D):
    assert torch.autograd.gradcheck(fused.mask_pool, mask_inputs(N, B, P, C, D))


@pytest.mark.parametrize("N, B, P, C, D", MASK_SHAPES + [(6, 8, 128, 984, 128)])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_the_mask_matches_torch(N, B, P, C, D, dtype, tol):
    inputs = mask_inputs(N, B, P, C, D, dtype)
    outputs = fused.mask_pool(*inputs), mask_pool_in_torch(*inputs)
    g_outputs = [torch.randn_like(out, dtype=torch.float64).to(dtype) for out in outputs[0]]
    grads = [torch.autograd.grad(outs, inputs, g_outputs) for outs in outputs]
    for ours, ref in zip(outputs[0] + grads[0], outputs[1] + grads[1]):
        assert torch.linalg.norm(ours - ref) <= tol * torch.linalg.norm(ref)


@pytest.mark.parametrize("N, M, K, J", [(2, 9, 17, 33), (1, 1, 1, 1), (1, 8, 40, 32)])
def test_gradcheck_of_the_cell_linear_layer(N, M, K, J):
    rng = np.random.default_rng(3)
    x, w = (torch.tensor(rng.normal(size=shape), requires_grad=True) for shape in ((N, M, K), (N, J, K)))
    assert torch.autograd.gradcheck(fused.cell_linear, (x, w))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
def test_the_cell_linear_layer_matches_torch_at_full_size(dtype, tol):
    # The mask's queries: (N, P, 2D) @ (N, D, 2D)ᵀ, and both products of the backward.
    x, w = (torch.randn(shape, dtype=dtype, requires_grad=True) for shape in ((6, 128, 256), (6, 128, 256)))
    g_y = torch.randn(6, 128, 128, dtype=dtype)
    ours, ref = fused.cell_linear(x, w), x @ w.transpose(1, 2)
    for a, b in zip((ours, *torch.autograd.grad(ours, (x, w), g_y)), (ref, *torch.autograd.grad(ref, (x, w), g_y))):
        assert torch.linalg.norm(a - b) <= tol * torch.linalg.norm(b)


def data_for(cfg: spec.TromptConfig, rows: int) -> tuple[dict, np.ndarray, np.ndarray]:
    if cfg == CFG:
        return problem(rows=rows)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, cfg.n_columns)) * np.where(rng.random(cfg.n_columns) < 0.2, 30.0, 1.0)
    return spec.init_params(cfg, seed=1, dtype="float64"), x, rng.normal(size=rows)


def predictions_and_grads(variant: str, cfg: spec.TromptConfig, rows: int, dtype: torch.dtype
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Predictions and gradients, the latter in the stacked (N, C, D) layout of every variant."""
    params, x, y = data_for(cfg, rows)
    transposed = model.TRANSPOSED.get(variant, ())
    p = {k: t.requires_grad_() for k, t in model.stack_params(params, cfg, dtype=dtype,
                                                               transposed=transposed).items()}
    pred = model.VARIANTS[variant](p, torch.tensor(x, dtype=dtype))
    model.sum_squared_error(pred, torch.tensor(y, dtype=dtype)).backward()
    return pred.detach(), {k: t.grad.transpose(1, 2) if k in transposed else t.grad
                           for k, t in p.items() if t.grad is not None}


@pytest.mark.parametrize("cfg, rows", [(CFG, 1), (CFG, 3), (WIDE, 3), (DEEP, 5)], ids=["B=1", "B=3", "wide", "deep"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_matches_r5_on_odd_shapes(cfg, rows, dtype, tol):
    ours, ours_grads = predictions_and_grads("r5-fused", cfg, rows, dtype)
    ref, ref_grads = predictions_and_grads("r5", cfg, rows, dtype)
    assert ours.shape == (rows, cfg.n_cycles)
    assert torch.linalg.norm(ours - ref) <= tol * torch.linalg.norm(ref)
    assert set(ours_grads) == set(ref_grads)
    for name, ref_grad in ref_grads.items():
        assert torch.linalg.norm(ours_grads[name] - ref_grad) <= tol * torch.linalg.norm(ref_grad), name


def test_refuses_a_device_other_than_the_cpu():
    params, _, _ = problem(rows=2)
    p = model.stack_params(params, CFG, transposed=model.TRANSPOSED["r5-fused"])
    with pytest.raises(ValueError, match="r5-fused runs on the CPU only"):
        model.forward_r5_fused(p, torch.empty(2, CFG.n_columns, device="meta"))


def test_the_shapes_here_follow_the_kernels_column_blocks():
    assert fused.kernels().LANES == fused.LANES


def test_the_pinned_ninja_is_found_without_an_activated_venv(monkeypatch):
    ninja = pytest.importorskip("ninja")
    monkeypatch.setenv("PATH", "/nonexistent")  # no ninja by name, as for `.venv/bin/python -m ...`
    fused._ninja_on_path()
    assert shutil.which("ninja") == os.path.join(ninja.BIN_DIR, "ninja")


def test_a_failed_build_is_one_clear_error(monkeypatch):
    # No compiler: torch's builder raises deep inside; the trainer reports one line instead.
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension 'trompt_fused_block': g++: not found\nmore lines")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    fused.kernels.cache_clear()
    try:
        with pytest.raises(fused.KernelBuildError, match=r"could not be built \(Error building .*g\+\+: not found\)"):
            fused.kernels()
        params, x, y = problem(rows=2)
        with pytest.raises(ValueError, match=r"r5-fused C\+\+ kernels could not be built"):
            backends.load("torch", device="cpu").trainer(params, CFG, x, y, variant="r5-fused")
    finally:
        fused.kernels.cache_clear()


@pytest.mark.slow
def test_compiled_variant_passes_bench_check():
    result = check.check_trainer("torch", dtype="float64", options={"variant": "r5-fused", "compile": True})
    assert result["verdict"] == "pass", check.format_report(result)


def test_the_transposed_layout_round_trips():
    params, _, _ = problem(rows=2)
    names = model.TRANSPOSED["r5-fused"]
    p = model.stack_params(params, CFG, dtype=torch.float64, transposed=names)
    w = p["feature_emb_weight"]
    assert w.shape == (CFG.n_cycles, CFG.d_model, CFG.n_columns) and w.is_contiguous()
    assert w[1, 2, 3].item() == params["tcells.1.feature_emb_weight"][3, 2]
    back = model.unstack(p, CFG, transposed=names)
    assert set(back) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_a_checkpoint_of_the_transposed_layout_continues_bit_identically():
    # state() and load_state() convert W and Bias between (N, D, C) and the canonical (C, D).
    params, x, y = problem(rows=12)
    saved = backends.load("torch", dtype="float64").trainer(params, CFG, x, y, variant="r5-fused").state()
    for name, value in params.items():  # canonical names and shapes, before any step
        np.testing.assert_array_equal(saved[f"param/{name}"], value, err_msg=name)
    batches = [np.arange(i, i + 3) for i in range(0, 12, 3)]
    assert_continues_bit_identically(backends.load("torch", dtype="float64"), CFG, x, y, batches,
                                     variant="r5-fused")


@pytest.mark.parametrize("compiled", [False, True])
def test_the_op_profile_counts_each_kernel_once_per_step(compiled):
    # op_times (torch.profiler) sees the custom ops once per step (the queries' product three times); compiled, the loss is
    # recompiled with inductor's per-kernel profiling, so its generated CPU kernels appear by name.
    params, x, y = problem(rows=16)
    batches = [np.arange(8), np.arange(8, 16), np.arange(4, 12)]  # one shape: no recompile inside
    trainer = backends.load("torch").trainer(params, CFG, x, y, variant="r5-fused", compile=compiled)
    trainer.run(batches[:1])
    ops = trainer.op_times(batches)
    calls = {name: n for name, _, n in ops}
    for op in ("stats_forward", "pool_forward", "pool_grad_q", "block_backward", "mask_forward",
               "mask_backward"):
        assert calls[f"trompt_fused::{op}"] == len(batches)
    assert calls["trompt_fused::cell_matmul"] == 3 * len(batches)  # the queries: forward, 2 backward
    assert [t for _, t, _ in ops] == sorted((t for _, t, _ in ops), reverse=True) and ops[-1][1] > 0
    assert any("cpp_fused" in name for name in calls) == compiled
