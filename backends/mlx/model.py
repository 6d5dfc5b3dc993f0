"""The modified Trompt in MLX, computed by the exact R5 rewrite (docs/SPEC.md §7).

Same numbers as reference/model.py (up to rounding), far less work:
  - the six cells are stacked on a leading axis N and run as batched operations (F1);
  - the importance mask M (N, P, C) depends on parameters only: computed once per step (F2);
  - the (B, P, C, D) expansion and the (B, P, D) cell output are never built: the downstream
    head is reassociated so each sample and cell needs C-vectors only (F3-F5);
  - the feature LayerNorm's affine part is folded into those C-vectors (F6).
MLX's autodiff differentiates this forward; no hand-written backward.

Shapes: B batch, C columns, P prompts, D d_model, N cycles (= cells).
Parameters live "stacked": one (N, ...) array per per-cell leaf name (see `stack_cells`).
"""

from __future__ import annotations

from backends.mlx import blas  # noqa: F401  (its OpenBLAS preload must precede mlx.core)

# isort: split
import mlx.core as mx
import numpy as np

from backends.spec import LN_EPS

MLX_DTYPES = {"float32": mx.float32, "float64": mx.float64}


def to_mlx(stacked: dict[str, np.ndarray], dtype: str) -> dict[str, mx.array]:
    return {k: mx.array(np.asarray(v), dtype=MLX_DTYPES[dtype]) for k, v in stacked.items()}


def to_numpy(tree: dict[str, mx.array]) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree.items()}


# -- the model ----------------------------------------------------------------------------------

def layer_norm(h: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """LayerNorm over the last axis, two-pass variance like torch. Hand-written because
    mx.fast.layer_norm measured ~10x slower on CPU."""
    centred = h - h.mean(axis=-1, keepdims=True)
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred * mx.rsqrt(var + LN_EPS) * weight + bias


def softmax(z: mx.array, axis: int = -1) -> mx.array:
    """Softmax computed with expm1. MLX 0.32's CPU float64 `exp` is only float32-accurate (1e-7
    relative) while `expm1` and its gradient are exact; on max-shifted logits (<= 0)
    expm1(z) + 1 is exp(z) to within an ulp of 1, so float64 stays float64. Same in float32."""
    shifted = z - mx.stop_gradient(z.max(axis=axis, keepdims=True))
    weights = mx.expm1(shifted) + 1
    return weights / weights.sum(axis=axis, keepdims=True)


def importance_mask(p: dict[str, mx.array]) -> mx.array:
    """M = softmax_c(Q K^T) for all cells: (N, P, C). Parameters only, so once per step (F2)."""
    emb_prompt = p["emb_prompt"]  # (N, P, D)
    n_cells = emb_prompt.shape[0]
    prompt = mx.broadcast_to(p["prompt"], (n_cells, *p["prompt"].shape))  # (N, P, D)
    normed = layer_norm(emb_prompt, p["ln_prompt.weight"][:, None, :], p["ln_prompt.bias"][:, None, :])
    fused = mx.concatenate([normed, prompt], axis=-1)  # (N, P, 2D)
    query = fused @ p["dense_imp.weight"].transpose(0, 2, 1) + p["dense_imp.bias"][:, None, :] + emb_prompt
    key = layer_norm(p["emb_column"], p["ln_col.weight"][:, None, :], p["ln_col.bias"][:, None, :])
    # key: (N, C, D)
    return softmax(query @ key.transpose(0, 2, 1), axis=-1)  # (N, P, C)


def cell_features(p: dict[str, mx.array], x: mx.array, mask: mx.array) -> mx.array:
    """The pooled D-vector z that the head sees for every cell and sample: (N, B, D).

    Equals the softmax-weighted sum over prompts of the reference's cell output, without ever
    forming it (F5, F6): with E = LN_emb(H), t = E v, s = 1 + w (dense_expand),
    logits = s * (M t) + e * sum(v) + v0, pi = softmax_p(logits), alpha = M^T (pi * s),
    z = sum_c alpha_c E_c + pi . e."""
    v = p["tdown.dense0.weight"][0]  # (D,)
    gamma, beta = p["ln_emb.weight"], p["ln_emb.bias"]  # (N, D)
    scale = 1.0 + p["dense_expand.weight"][:, :, 0]  # (N, P)   s
    shift = p["dense_expand.bias"]  # (N, P)   e

    # Feature embedding before its LayerNorm; E itself is never materialised.
    h = mx.maximum(x[None, :, :, None] * p["feature_emb_weight"][:, None] + p["feature_emb_bias"][:, None], 0)
    n_cells, d_model = gamma.shape
    u = gamma * v  # (N, D)
    # MLX runs each CPU reduction over the 6M-element h as its own single-threaded pass (~4 ms),
    # and autodiff doubles them. So H.u and the mean come from one GEMM against two probe
    # vectors, and the variance is mean(h^2) - mean^2 (one fewer stored (N, B, C, D) tensor,
    # here and in the backward). One-pass variance loses a little in float32, but LayerNorm rows
    # of relu(x W + b) are far from constant, so the cancellation stays mild (docs/SPEC.md §9;
    # `python -m bench check --backend mlx` shows the result within the float32 tolerances).
    probes = mx.stack([u, mx.full((n_cells, d_model), 1.0 / d_model, dtype=h.dtype)], axis=-1)  # (N, D, 2)
    stats = h @ probes[:, None]  # (N, B, C, 2)
    h_dot_u, mean = stats[..., 0], stats[..., 1]
    mean_sq = (h * h) @ probes[:, None, :, 1:]  # (N, B, C, 1)
    rstd = mx.rsqrt(mean_sq[..., 0] - mean * mean + LN_EPS)  # (N, B, C)

    # t_c = E_c . v = rstd_c * (H_c . (gamma*v) - mean_c * sum(gamma*v)) + beta . v
    t = rstd * (h_dot_u - mean * u.sum(axis=-1)[:, None, None]) + (beta @ v)[:, None, None]

    logits = (scale[:, None, :] * (t @ mask.transpose(0, 2, 1))  # (N, B, P)
              + (shift * v.sum())[:, None, :] + p["tdown.dense0.bias"])
    pi = softmax(logits, axis=-1)  # over prompts
    alpha = (pi * scale[:, None, :]) @ mask  # (N, B, C)

    # z = gamma * sum_c alpha_c rstd_c (H_c - mean_c) + beta * sum_c alpha_c + pi . e
    weights = alpha * rstd  # (N, B, C)
    pooled_h = (weights[:, :, None, :] @ h)[:, :, 0, :]  # (N, B, D)
    centred_sum = pooled_h - (weights * mean).sum(axis=-1)[..., None]
    shift_term = (pi * shift[:, None, :]).sum(axis=-1)[..., None]  # (N, B, 1)
    return gamma[:, None, :] * centred_sum + beta[:, None, :] * alpha.sum(axis=-1)[..., None] + shift_term


def head(p: dict[str, mx.array], z: mx.array) -> mx.array:
    """Shared downstream MLP: (N, B, D) -> (N, B)."""
    hidden = mx.maximum(z @ p["tdown.dense1.weight"].T + p["tdown.dense1.bias"], 0)
    hidden = layer_norm(hidden, p["tdown.ln.weight"], p["tdown.ln.bias"])
    return (hidden @ p["tdown.dense_out.weight"].T)[..., 0] + p["tdown.dense_out.bias"]


def forward(p: dict[str, mx.array], x: mx.array) -> mx.array:
    """Predictions (B, N) for x (B, C), like reference.model.Trompt.forward."""
    return head(p, cell_features(p, x, importance_mask(p))).T


def mse_over_cycles(p: dict[str, mx.array], x: mx.array, y: mx.array) -> mx.array:
    """Mean over B * N of (prediction - y)^2: the same target for every cycle."""
    return mx.mean(mx.square(forward(p, x) - y[:, None]))
