"""The hand-derived backward of R5's per-sample part for one cell (`model.r5_pool`).

Why by hand: JAX's autodiff of `model.r5_forward` makes XLA's CPU compiler materialise several
(N, B, C, D) tensors (and even a broadcast of the constant 0 for relu) and reduce over the
batch axis with slow generic reductions; the backward then costs ~10x the forward. This one
recomputes H = relu(x W + Bias) from the scalars x (the folded ln_emb affine means E is never
stored), keeps only (B, C)-sized intermediates between the passes, and sums over the small
static batch with plain adds. The tests hold it to autodiff and to the float64 reference.

Shapes: B batch, C columns, P prompts, D d_model.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from backends.jax import fused as fused_kernels


class R5Inputs(NamedTuple):
    """The arguments of `model.r5_pool` (one cell); also the structure of their cotangents."""

    x: jax.Array  # (B, C) raw features (data: no gradient)
    w: jax.Array  # (C, D) feature_emb_weight
    b: jax.Array  # (C, D) feature_emb_bias
    gamma: jax.Array  # (D,) ln_emb scale
    beta: jax.Array  # (D,) ln_emb bias
    s: jax.Array  # (P,) expansion scale 1 + dense_expand weight (the residual folded in)
    e: jax.Array  # (P,) expansion shift, the dense_expand bias
    mask: jax.Array | None  # (P, C) importance mask (None for r5-fused, which takes Q and K)
    v: jax.Array  # (D,) the head's dense0 weight
    v0: jax.Array  # () the head's dense0 bias
    query: jax.Array | None = None  # (P, D) r5-fused: the mask M = softmax(Q Kᵀ) is the kernels'
    key: jax.Array | None = None  # (C, D)


class R5Residuals(NamedTuple):
    """What the forward keeps for the backward: nothing bigger than (B, C), (B, P) or (B, D)."""

    inputs: R5Inputs
    mean: jax.Array  # (B, C) mean over d of H
    rstd: jax.Array  # (B, C) 1 / sqrt(var over d of H + eps)
    u: jax.Array  # (D,) gamma * v
    t_raw: jax.Array  # (B, C) centred @ u
    t: jax.Array  # (B, C) E v, the head's logit contribution of each column
    m_t: jax.Array  # (B, P) t @ mask.T
    weights: jax.Array  # (B, P) the head's softmax pooling weights over prompts
    alpha: jax.Array  # (B, C) column weights of the pooled vector
    q: jax.Array  # (B, C) alpha * rstd
    zc: jax.Array  # (B, D) sum over c of q * centred
    a_sum: jax.Array  # (B,) sum over c of alpha
    mask: jax.Array | None = None  # (P, C) r5-fused: the mask its kernels computed


def r5_backward(res: R5Residuals, g_z: jax.Array, fused: bool = False) -> tuple[R5Inputs]:
    """Cotangents of every input of `model.r5_pool` from g_z (B, D), the cotangent of z. `fused`:
    the two passes over H run in the C++ kernels of fused.py (variant r5-fused)."""
    inp = res.inputs
    # z = gamma * zc + beta * a_sum + weights . e
    g_gamma = (g_z * res.zc).sum(0)
    g_beta = g_z.T @ res.a_sum
    g_zsum = g_z.sum(-1)  # (B,)
    g_zc = g_z * inp.gamma  # (B, D)
    # zc = sum_c q_c centred_c, q = alpha * rstd; centred recomputed from x (one pass over B*C*D)
    if fused:
        g_q = fused_kernels.pool_grad_q(inp.x, inp.w, inp.b, res.mean, g_zc)
    else:
        pre = inp.x[:, :, None] * inp.w + inp.b
        centred = jax.nn.relu(pre) - res.mean[..., None]
        g_q = jnp.einsum("bcd,bd->bc", centred, g_zc)
    g_alpha = (g_z @ inp.beta)[:, None] + g_q * res.rstd  # (B, C)
    g_rstd = g_q * res.alpha
    if fused:  # the mask and the prompt pooling: one kernel (g_lsum is the cotangent of the shift)
        g_query, g_key, g_t, g_s, g_lsum, g_e = fused_kernels.mask_backward(
            inp.query, inp.key, res.t, inp.s, inp.e, res.mask, res.m_t, res.weights, g_alpha, g_zsum[:, None])
        g_mask = None
    else:
        g_query = g_key = None
        g_weights = g_zsum[:, None] * inp.e  # (B, P): z holds weights . e
        g_e = res.weights.T @ g_zsum
        # alpha = (weights * s) @ mask
        g_ws = g_alpha @ inp.mask.T  # (B, P)
        g_mask = (res.weights * inp.s).T @ g_alpha
        g_weights = g_weights + g_ws * inp.s
        g_s = (g_ws * res.weights).sum(0)
        # softmax over prompts
        g_logits = res.weights * (g_weights - (res.weights * g_weights).sum(-1, keepdims=True))
        # logits = s * (t @ mask.T) + e * sum(v) + v0
        g_s = g_s + (g_logits * res.m_t).sum(0)
        g_mt = g_logits * inp.s
        g_t = g_mt @ inp.mask  # (B, C)
        g_mask = g_mask + g_mt.T @ res.t
        g_lsum = g_logits.sum(0)  # (P,)
    g_e = g_e + g_lsum * inp.v.sum()
    g_v0 = g_lsum.sum()  # zero up to rounding: v0 only shifts every logit (a dead parameter)
    # t = rstd * (centred @ u) + beta @ v, u = gamma * v
    g_rstd = g_rstd + g_t * res.t_raw
    g_traw = g_t * res.rstd
    if fused:  # the second pass: g_W, g_Bias and g_u at once
        g_mean = -res.q * g_zc.sum(-1, keepdims=True)  # zc holds -mean_c q_c in every channel
        g_w, g_b, g_u = fused_kernels.block_backward(inp.x, inp.w, inp.b, res.u, res.mean, res.rstd, g_mean,
                                                     g_rstd, g_traw, res.q, g_zc)
    else:
        g_u = jnp.einsum("bc,bcd->d", g_traw, centred)
    g_tsum = g_t.sum()
    g_beta = g_beta + g_tsum * inp.v
    g_v = (g_lsum @ inp.e) + g_tsum * inp.beta + g_u * inp.gamma
    g_gamma = g_gamma + g_u * inp.v
    if not fused:
        g_w, g_b = _block_grads(inp, res, centred, pre, g_zc, g_rstd, g_traw)
    return (R5Inputs(x=None, w=g_w, b=g_b, gamma=g_gamma, beta=g_beta, s=g_s, e=g_e, mask=g_mask,
                     v=g_v, v0=g_v0, query=g_query, key=g_key),)


def _block_grads(inp: R5Inputs, res: R5Residuals, centred: jax.Array, pre: jax.Array, g_zc: jax.Array,
                 g_rstd: jax.Array, g_traw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """g_W and g_Bias (C, D): the cotangent of pre, summed over the rows."""
    D = inp.w.shape[-1]
    # rstd = (mean_d centred^2 + eps)^(-1/2), centred = H - mean_d H, H = relu(pre):
    # g_centred = q g_zc + g_traw u + k centred, and the centring subtracts its mean over d
    # (sum_d centred = 0, so the k term has mean zero).
    k = g_rstd * -(res.rstd ** 3) / D
    g_centred_mean = (res.q * g_zc.sum(-1, keepdims=True) + g_traw * res.u.sum()) / D  # (B, C)
    g_pre = jnp.where(pre > 0, res.q[..., None] * g_zc[:, None, :] + g_traw[..., None] * res.u
                      + k[..., None] * centred - g_centred_mean[..., None], 0.0)
    # Sums over the batch as B explicit adds: faster on XLA CPU than a reduction over axis 0.
    x = inp.x
    g_w, g_b = x[0, :, None] * g_pre[0], g_pre[0]
    for i in range(1, x.shape[0]):
        g_w, g_b = g_w + x[i, :, None] * g_pre[i], g_b + g_pre[i]
    return g_w, g_b

