"""r5's embedding block as fused CPU kernels (numba): H = relu(x W + Bias) is never stored.

torch r5 (model.forward_r5) builds H, an (N, B, C, D) tensor (24 MB in float32 at full size), and
then reads it back once per reduction: the mean, the mean of squares, H·u, αᵀH, and as many again
in autograd's backward. Here every pass recomputes H from the scalar x[b,c] and the (C, D)
parameters, which costs two operations per element and no memory traffic for H at all.

Notation of docs/SPEC.md §3 and F6, for one cell n and row b (the cell index is left out):

    pre[c,d] = x[b,c] W[c,d] + Bias[c,d],    H = relu(pre)
    μ_c = (1/D) Σ_d H[c,d]                   the LayerNorm mean
    r_c = ((1/D) Σ_d (H[c,d] − μ_c)² + eps)^(-1/2)
    t_raw,c = Σ_d (H[c,d] − μ_c) u_d         u = γE ∘ v:  t_c = r_c t_raw,c + βE·v  (F6)
    ẑ = Σ_c q_c (H[c,:] − μ_c)               q = α ∘ r:   z = γE ∘ ẑ + βE Σ_c α_c + π·e  (F5, F6)

The block is split where r5 itself must wait: α comes from the head's softmax over prompts of
s ∘ (M t) + ..., which needs t of *every* column, so no single pass over (c, d) can produce ẑ.
Two autograd Functions therefore cover everything r5 does with H, and the mask, the softmax, α
and the cheap (N, B, C)/(N, B, D) algebra around them stay in torch (model.forward_r5_fused):

    EmbedStats  (x, W, Bias, u)        -> (μ, r, t_raw)    each (N, B, C)
    EmbedPool   (x, W, Bias, μ, q)     -> ẑ                 (N, B, D)

Their backward passes recompute H the same way; each saves only its inputs (which exist anyway)
and, for EmbedStats, μ and r: nothing of size (N, B, C, D).

Arithmetic. Every kernel computes in the storage dtype, as torch's own kernels do: float32 work
stays float32 (AVX-512 holds 16 float32 lanes against 8 float64 ones; a float64 constant in a
loop would promote it, so 0 and 1/D are passed in that dtype). The sums inside a kernel are short
(over D = 128 channels, a block of CHUNK columns, or the B rows), and the long ones across blocks
and cells (ẑ over all columns, g_u over rows and columns, g_x over cells) are added in float64 by
the caller. `bench check` and tests/backends/torch/test_fused.py measure the result against the
float64 reference and against torch r5. The variance is two-pass (the mean first, then the mean
of squared deviations): SPEC §9 fact 2 shows the one-pass form E[h²] − μ² losing bits on rows
with a large offset, and since H is recomputed from x rather than re-read, the second pass costs
arithmetic only. (Welford's running update needs a division per element; two passes need none.)

Loop order. fastmath=False keeps the order of every sum as written, so LLVM may not vectorise a
loop that reduces into one scalar (that needs reassociation): a sum along the innermost loop runs
one add per add-latency, 3-4x slower per element than an element-wise loop here. So the innermost
loop never reduces. Kernels that sum over d (μ, r, t_raw, g_q, g_x) copy a block of CHUNK
columns of W and Bias transposed into a local (D, CHUNK) tile and put the columns innermost,
keeping one accumulator per (row, column); the rows loop sits inside the channel loop, so each
tile row is loaded once for all B rows. EmbedPool's forward, which sums over c, keeps the
channels innermost in the canonical (C, D) layout. Each parallel task owns one cell and one block
of columns and loops over the rows itself, so the gradients of W and Bias (sums over rows) need
no atomics.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numba
import numpy as np
import torch
from numba import prange

from backends.spec import LN_EPS

# numba's own thread pool rather than OpenMP (numba's default where libgomp exists), unless the
# user chose: once these kernels had run under numba's OpenMP layer (a second libgomp beside
# torch's), every training step of the process, r5's as well as r5-fused's, took 8-10x more CPU
# time at threads=1 on a shared 2-core machine; under workqueue it did not. It takes effect if no
# numba parallel kernel has run in this process yet. The workqueue pool must not be entered from
# two threads at once: the kernels run on the thread that calls forward and backward (autograd
# runs a CPU backward on the calling thread).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

# Columns per parallel task. At D = 128 the tiles of W and Bias take 32 KB each in float32 and a
# float64 gradient tile 64 KB; 32 and 128 columns were slower on a 2-core AMD EPYC.
CHUNK = 64


def _jit(fn: Callable, parallel: bool = True) -> Callable:
    """numba.njit(cache=True); without the cache when no directory for it is writable (a
    read-only install with no writable home): numba then refuses cache=True at decoration."""
    try:
        return numba.njit(parallel=parallel, cache=True, fastmath=False)(fn)
    except RuntimeError:
        return numba.njit(parallel=parallel, fastmath=False)(fn)


@functools.partial(_jit, parallel=False)
def _tile(a: np.ndarray, n: int, c0: int, width: int) -> np.ndarray:
    """a[n, c0:c0+width, :] transposed into a (D, width) array of a's dtype."""
    D = a.shape[2]
    out = np.empty((D, width), a.dtype)
    for j in range(width):
        for d in range(D):
            out[d, j] = a[n, c0 + j, d]
    return out


@functools.partial(_jit, parallel=False)
def _rows(x: np.ndarray, c0: int, width: int) -> np.ndarray:
    """x[:, c0:c0+width] as a contiguous (B, width) array."""
    B = x.shape[0]
    out = np.empty((B, width), x.dtype)
    for b in range(B):
        for j in range(width):
            out[b, j] = x[b, c0 + j]
    return out


def _chunks(C: int) -> int:
    return (C + CHUNK - 1) // CHUNK


# ---------------------------------------------------------------------------------------------
# EmbedStats: μ, r and t_raw per (n, b, c)


@_jit
def _stats_forward(x, w, bias, u, zero, inv_d, eps, mean, rstd, t_raw):
    """μ, r and t_raw of every (n, b, c) into mean, rstd, t_raw (the storage dtype)."""
    N, C, D = w.shape
    B = x.shape[0]
    n_chunks = (C + CHUNK - 1) // CHUNK
    for task in prange(N * n_chunks):
        n, c0 = task // n_chunks, (task % n_chunks) * CHUNK
        width = min(CHUNK, C - c0)
        wt, bt, xb = _tile(w, n, c0, width), _tile(bias, n, c0, width), _rows(x, c0, width)
        mu, sq, su = np.full((B, width), zero), np.full((B, width), zero), np.full((B, width), zero)
        # Pass 1: μ.
        for d in range(D):
            for b in range(B):
                for j in range(width):
                    pre = xb[b, j] * wt[d, j] + bt[d, j]
                    mu[b, j] += pre if pre > zero else zero
        for b in range(B):
            for j in range(width):
                mu[b, j] *= inv_d
        # Pass 2: the squared deviations and t_raw, from H recomputed.
        for d in range(D):
            ud = u[n, d]
            for b in range(B):
                for j in range(width):
                    pre = xb[b, j] * wt[d, j] + bt[d, j]
                    dev = (pre if pre > zero else zero) - mu[b, j]
                    sq[b, j] += dev * dev
                    su[b, j] += dev * ud
        for b in range(B):
            for j in range(width):
                mean[n, b, c0 + j] = mu[b, j]
                rstd[n, b, c0 + j] = 1.0 / np.sqrt(sq[b, j] * inv_d + eps)
                t_raw[n, b, c0 + j] = su[b, j]


@_jit
def _stats_backward(x, w, bias, u, mean, rstd, g_mean, g_rstd, g_traw, zero, inv_d,
                    g_w, g_bias, g_u_part, g_x_part, want_gx):
    """With dev_d = H_d − μ (Σ_d dev_d = 0) and ū = (1/D) Σ_d u_d, the three outputs depend on H by

        ∂μ/∂H_d = 1/D,    ∂t_raw/∂H_d = u_d − ū,    ∂r/∂H_d = −r³ dev_d / D

    (the μ inside dev drops out of the last two because the deviations sum to zero), so
        g_H_d = a + g_t u_d + k dev_d,   a = g_μ/D − g_t ū,   k = −g_r r³/D,
    g_pre = g_H where pre > 0 (relu), g_W[c,d] = Σ_b x[b,c] g_pre, g_Bias[c,d] = Σ_b g_pre,
    g_u_d = Σ_b Σ_c g_t dev_d and g_x[b,c] = Σ_n Σ_d W[c,d] g_pre (summed over n by the caller)."""
    N, C, D = w.shape
    B = x.shape[0]
    n_chunks = (C + CHUNK - 1) // CHUNK
    for task in prange(N * n_chunks):
        n, k_chunk = task // n_chunks, task % n_chunks
        c0 = k_chunk * CHUNK
        width = min(CHUNK, C - c0)
        wt, bt, xb = _tile(w, n, c0, width), _tile(bias, n, c0, width), _rows(x, c0, width)
        gwt, gbt, gut = np.full((D, width), zero), np.full((D, width), zero), np.full((D, width), zero)
        u_bar = zero
        for d in range(D):
            u_bar += u[n, d]
        u_bar *= inv_d
        mu, gt, a, k, gx = (np.full((B, width), zero), np.full((B, width), zero), np.full((B, width), zero),
                            np.full((B, width), zero), np.full((B, width), zero))
        for b in range(B):
            for j in range(width):
                c = c0 + j
                mu[b, j], gt[b, j] = mean[n, b, c], g_traw[n, b, c]
                a[b, j] = g_mean[n, b, c] * inv_d - gt[b, j] * u_bar
                k[b, j] = -g_rstd[n, b, c] * rstd[n, b, c] ** 3 * inv_d
        for d in range(D):
            ud = u[n, d]
            for b in range(B):
                for j in range(width):
                    pre = xb[b, j] * wt[d, j] + bt[d, j]
                    dev = (pre if pre > zero else zero) - mu[b, j]
                    g_pre = a[b, j] + gt[b, j] * ud + k[b, j] * dev if pre > zero else zero
                    gwt[d, j] += xb[b, j] * g_pre
                    gbt[d, j] += g_pre
                    gut[d, j] += gt[b, j] * dev
                    if want_gx:
                        gx[b, j] += wt[d, j] * g_pre
        if want_gx:
            for b in range(B):
                for j in range(width):
                    g_x_part[n, b, c0 + j] = gx[b, j]
        for j in range(width):
            for d in range(D):
                g_w[n, c0 + j, d] = gwt[d, j]
                g_bias[n, c0 + j, d] = gbt[d, j]
                g_u_part[n, k_chunk, d] += gut[d, j]


# ---------------------------------------------------------------------------------------------
# EmbedPool: ẑ = Σ_c q_c (H[c,:] − μ_c) per (n, b)


@_jit
def _pool_forward(x, w, bias, mean, q, zero, z_part):
    """The sum over c is split by column block (z_part[n, block, b, :]); the caller adds the
    blocks. Channels innermost: each step adds one term to D independent accumulators."""
    N, C, D = w.shape
    B = x.shape[0]
    n_chunks = (C + CHUNK - 1) // CHUNK
    for task in prange(N * n_chunks):
        n, k_chunk = task // n_chunks, task % n_chunks
        c0 = k_chunk * CHUNK
        acc = np.full((B, D), zero)
        for c in range(c0, min(c0 + CHUNK, C)):
            for b in range(B):
                xbc, mu, qc = x[b, c], mean[n, b, c], q[n, b, c]
                for d in range(D):
                    pre = xbc * w[n, c, d] + bias[n, c, d]
                    acc[b, d] += qc * ((pre if pre > zero else zero) - mu)
        for b in range(B):
            for d in range(D):
                z_part[n, k_chunk, b, d] = acc[b, d]


@_jit
def _pool_backward(x, w, bias, mean, q, g_z, zero, g_q, g_w, g_bias, g_x_part, want_gx):
    """∂ẑ_d/∂q_c = H[c,d] − μ_c and ∂ẑ_d/∂H[c,d] = q_c, so g_q_c = Σ_d (H[c,d] − μ_c) g_ẑ,d and
    g_pre[c,d] = q_c g_ẑ,d where pre > 0; W, Bias and x as in `_stats_backward`. (g_μ_c =
    −q_c Σ_d g_ẑ,d needs no H: the caller computes it.)"""
    N, C, D = w.shape
    B = x.shape[0]
    n_chunks = (C + CHUNK - 1) // CHUNK
    for task in prange(N * n_chunks):
        n, c0 = task // n_chunks, (task % n_chunks) * CHUNK
        width = min(CHUNK, C - c0)
        wt, bt, xb = _tile(w, n, c0, width), _tile(bias, n, c0, width), _rows(x, c0, width)
        gwt, gbt = np.full((D, width), zero), np.full((D, width), zero)
        mu, qb = np.full((B, width), zero), np.full((B, width), zero)
        gq, gx = np.full((B, width), zero), np.full((B, width), zero)
        for b in range(B):
            for j in range(width):
                mu[b, j], qb[b, j] = mean[n, b, c0 + j], q[n, b, c0 + j]
        for d in range(D):
            for b in range(B):
                gzd = g_z[n, b, d]
                for j in range(width):
                    pre = xb[b, j] * wt[d, j] + bt[d, j]
                    gq[b, j] += ((pre if pre > zero else zero) - mu[b, j]) * gzd
                    g_pre = qb[b, j] * gzd if pre > zero else zero
                    gwt[d, j] += xb[b, j] * g_pre
                    gbt[d, j] += g_pre
                    if want_gx:
                        gx[b, j] += wt[d, j] * g_pre
        for b in range(B):
            for j in range(width):
                g_q[n, b, c0 + j] = gq[b, j]
                if want_gx:
                    g_x_part[n, b, c0 + j] = gx[b, j]
        for j in range(width):
            for d in range(D):
                g_w[n, c0 + j, d] = gwt[d, j]
                g_bias[n, c0 + j, d] = gbt[d, j]


# ---------------------------------------------------------------------------------------------
# torch custom ops around the kernels: opaque to torch.compile, which traces the autograd
# Functions below through them (their fake implementations give it the output shapes).


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _threads() -> None:
    """numba's pool as wide as torch's (the trainer's `threads` option), within numba's maximum."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _f64(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float64)


def _scalars(a: np.ndarray, D: int) -> tuple[np.floating, np.floating]:
    """0 and 1/D in a's dtype: the kernels' arithmetic stays in the storage dtype only if every
    constant in it has that dtype (a float64 literal would promote float32 work to float64)."""
    return a.dtype.type(0), a.dtype.type(1 / D)


@torch.library.custom_op("trompt_fused::stats_forward", mutates_args=())
def stats_forward(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(μ, r, t_raw), each (N, B, C) in w's dtype."""
    (N, C, D), B = w.shape, x.shape[0]
    w_np = _np(w)
    mean, rstd, t_raw = (np.empty((N, B, C), w_np.dtype) for _ in range(3))
    _threads()
    _stats_forward(_np(x), w_np, _np(bias), _np(u), *_scalars(w_np, D), LN_EPS, mean, rstd, t_raw)
    return torch.from_numpy(mean), torch.from_numpy(rstd), torch.from_numpy(t_raw)


@stats_forward.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = (w.shape[0], x.shape[0], w.shape[1])
    return tuple(w.new_empty(shape) for _ in range(3))


@torch.library.custom_op("trompt_fused::stats_backward", mutates_args=())
def stats_backward(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor,
                   mean: torch.Tensor, rstd: torch.Tensor, g_mean: torch.Tensor, g_rstd: torch.Tensor,
                   g_traw: torch.Tensor, want_gx: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g_x, g_W, g_Bias, g_u); g_x is empty unless want_gx."""
    (N, C, D), B = w.shape, x.shape[0]
    w_np = _np(w)
    g_w, g_bias = np.empty((N, C, D), w_np.dtype), np.empty((N, C, D), w_np.dtype)
    g_u_part, g_x_part = _f64(N, _chunks(C), D), _f64(N, B, C) if want_gx else _f64(1, 1, 1)
    _threads()
    _stats_backward(_np(x), w_np, _np(bias), _np(u), _np(mean), _np(rstd), _np(g_mean), _np(g_rstd),
                    _np(g_traw), *_scalars(w_np, D), g_w, g_bias, g_u_part, g_x_part, want_gx)
    g_x = g_x_part.sum(0).astype(g_w.dtype) if want_gx else np.empty(0, g_w.dtype)
    return (torch.from_numpy(g_x), torch.from_numpy(g_w), torch.from_numpy(g_bias),
            torch.from_numpy(g_u_part.sum(1).astype(g_w.dtype)))


@stats_backward.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor, mean: torch.Tensor,
      rstd: torch.Tensor, g_mean: torch.Tensor, g_rstd: torch.Tensor, g_traw: torch.Tensor, want_gx: bool
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (x.new_empty(x.shape if want_gx else (0,), dtype=w.dtype), torch.empty_like(w),
            torch.empty_like(bias), torch.empty_like(u))


@torch.library.custom_op("trompt_fused::pool_forward", mutates_args=())
def pool_forward(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                 q: torch.Tensor) -> torch.Tensor:
    """ẑ (N, B, D) in w's dtype."""
    (N, C, D), B = w.shape, x.shape[0]
    w_np = _np(w)
    z_part = _f64(N, _chunks(C), B, D)
    _threads()
    _pool_forward(_np(x), w_np, _np(bias), _np(mean), _np(q), w_np.dtype.type(0), z_part)
    return torch.from_numpy(z_part.sum(1).astype(w_np.dtype))


@pool_forward.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, q: torch.Tensor
      ) -> torch.Tensor:
    return w.new_empty((w.shape[0], x.shape[0], w.shape[2]))


@torch.library.custom_op("trompt_fused::pool_backward", mutates_args=())
def pool_backward(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                  q: torch.Tensor, g_z: torch.Tensor, want_gx: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g_x, g_W, g_Bias, g_q); g_x is empty unless want_gx."""
    (N, C, D), B = w.shape, x.shape[0]
    w_np = _np(w)
    dtype = w_np.dtype
    g_w, g_bias, g_q = np.empty((N, C, D), dtype), np.empty((N, C, D), dtype), np.empty((N, B, C), dtype)
    g_x_part = _f64(N, B, C) if want_gx else _f64(1, 1, 1)
    _threads()
    _pool_backward(_np(x), w_np, _np(bias), _np(mean), _np(q), _np(g_z), dtype.type(0), g_q, g_w, g_bias,
                   g_x_part, want_gx)
    g_x = g_x_part.sum(0).astype(dtype) if want_gx else np.empty(0, dtype)
    return torch.from_numpy(g_x), torch.from_numpy(g_w), torch.from_numpy(g_bias), torch.from_numpy(g_q)


@pool_backward.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, q: torch.Tensor,
      g_z: torch.Tensor, want_gx: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (x.new_empty(x.shape if want_gx else (0,), dtype=w.dtype), torch.empty_like(w),
            torch.empty_like(bias), torch.empty_like(q))


# ---------------------------------------------------------------------------------------------
# The autograd Functions


class EmbedStats(torch.autograd.Function):
    """(x (B, C), W (N, C, D), Bias (N, C, D), u (N, D)) -> (μ, r, t_raw), each (N, B, C)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, rstd, t_raw = stats_forward(x, w, bias, u)
        # μ and r are saved for the backward: (N, B, C) numbers, against H's (N, B, C, D).
        ctx.save_for_backward(x, w, bias, u, mean, rstd)
        return mean, rstd, t_raw

    @staticmethod
    def backward(ctx, g_mean: torch.Tensor, g_rstd: torch.Tensor, g_traw: torch.Tensor
                 ) -> tuple[torch.Tensor | None, ...]:
        x, w, bias, u, mean, rstd = ctx.saved_tensors
        want_gx = ctx.needs_input_grad[0]
        g_x, g_w, g_bias, g_u = stats_backward(x, w, bias, u, mean, rstd, g_mean, g_rstd, g_traw, want_gx)
        return g_x if want_gx else None, g_w, g_bias, g_u


class EmbedPool(torch.autograd.Function):
    """(x (B, C), W, Bias (N, C, D), μ (N, B, C), q (N, B, C)) -> ẑ (N, B, D)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                q: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w, bias, mean, q)
        return pool_forward(x, w, bias, mean, q)

    @staticmethod
    def backward(ctx, g_z: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w, bias, mean, q = ctx.saved_tensors
        want_gx = ctx.needs_input_grad[0]
        g_x, g_w, g_bias, g_q = pool_backward(x, w, bias, mean, q, g_z, want_gx)
        g_mean = -q * g_z.sum(-1, keepdim=True)  # ẑ holds −μ_c q_c in every channel
        return g_x if want_gx else None, g_w, g_bias, g_mean, g_q


def embed_stats(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """μ, r and t_raw = (H − μ)·u of H = relu(x W + Bias), each (N, B, C); H is never stored."""
    return EmbedStats.apply(x, w, bias, u)


def embed_pool(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
               q: torch.Tensor) -> torch.Tensor:
    """ẑ = Σ_c q_c (H[c,:] − μ_c), (N, B, D); H is never stored."""
    return EmbedPool.apply(x, w, bias, mean, q)
