"""r5's embedding block and its importance mask as fused CPU kernels (C++, fused_block.cpp): H =
relu(x W + Bias) is never stored, and the mask and the head's prompt pooling run as one pass per
cell around three register-blocked products (The mask, below).

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

Their backward passes recompute H the same way, and the gradients of W and Bias are computed once
for both Functions, in EmbedStats's backward (the handoff, above the Functions below). Each saves
only its inputs (which exist anyway) and, for EmbedStats, μ and r: nothing of size (N, B, C, D).
The gradients, with dev_d = H_d − μ (Σ_d dev_d = 0) and ū = (1/D) Σ_d u_d:

    EmbedStats: ∂μ/∂H_d = 1/D, ∂t_raw/∂H_d = u_d − ū, ∂r/∂H_d = −r³ dev_d / D (the μ inside dev
      drops out of the last two because the deviations sum to zero), so
      g_H_d = a + g_t u_d + k dev_d with a = g_μ/D − g_t ū and k = −g_r r³/D;
    EmbedPool: ∂ẑ_d/∂q_c = H[c,d] − μ_c and ∂ẑ_d/∂H[c,d] = q_c, so g_q_c = Σ_d (H[c,d] − μ_c) g_ẑ,d
      and g_H[c,d] = q_c g_ẑ,d; g_μ_c = −q_c Σ_d g_ẑ,d needs no H (computed here, in torch);
    both: g_pre = g_H where pre > 0, g_W[c,d] = Σ_b x[b,c] g_pre, g_Bias[c,d] = Σ_b g_pre and
      g_x[b,c] = Σ_n Σ_d W[c,d] g_pre.

Arithmetic. The kernels compute in the storage dtype, as torch's own kernels do. The sums inside a
kernel run in loop order and are short (over D = 128 channels, 32 columns, or the B rows) except
ẑ's over all C columns, which runs in 16 lanes of C/16 terms each, the lanes then added in
float64; the sums across tasks (g_u over rows and columns, g_x over cells) are added in float64.
`bench check` and tests/backends/torch/test_fused.py measure the result against the
float64 reference and against torch r5. The variance is two-pass (the mean first, then the mean
of squared deviations): SPEC §9 fact 2 shows the one-pass form E[h²] − μ² losing bits on rows
with a large offset, and since H is recomputed from x rather than re-read, the second pass costs
arithmetic only.

Why C++. The same loops in numba (an earlier version of this file) were slower than
torch.compile's generated code for this block, for two reasons: numba kept each accumulator in a
small array in memory (a load and a store per add) where the C++ loops hold fixed-size blocks of
them in registers, and numba's thread pool was a second one beside torch's, competing with it for
the cores, where at::parallel_for runs on torch's own pool. How the loops are blocked is at the top
of fused_block.cpp.

Layout. The kernels that sum over the channels put 32 columns in the vector lanes, so they want
row d of W for those columns as consecutive numbers, which the stacked layout (N, C, D) does not
give: each task would copy and transpose its (32, D) block of W and Bias first, four times a step.
The r5-fused variant therefore keeps these two parameters channels-major, (N, D, C)
(model.TRANSPOSED): the kernels read them in place and write their gradients in the same layout.
AdamW is element-wise, so the update does not depend on the layout; the canonical (C, D) arrays
are restored whenever parameters, gradients or checkpoints leave the trainer (model.unstack).

The mask. What is left of r5 once H is fused away is the importance mask and the head's pooling
over prompts (F2, F5; model.importance_mask and model._reassociated_pooling), per cell:

    M = softmax_c(Q Kᵀ)  (P, C)      L = t Mᵀ  (B, P)      π = softmax_p(s ∘ L + shift)
    α = (π ∘ s) M  (B, C)            offset = π · e  (B)

with Q, K the mask's queries and keys (model.queries_and_keys: torch, but for the product of
dense_imp, which runs on the tile below as `cell_linear`), s = 1 + w and e the
expansion's weight and bias, shift = e Σv + v0. torch.compile runs this as a dozen kernels over
(N, P, C) tensors (3 MB each at full size): the logits' product, the softmax, the two small
products with M and, in the backward, the gradient of M from both of them, the softmax's backward
and two more large products, each a separate pass with its own output. MaskPool does it in
fused_mask.h's passes, each over one cell's mask while it is in cache: Q Kᵀ in register tiles with
the softmax and L on the finished rows; the prompt softmax; α. Backward, with the derivatives of
the two softmaxes (dz = y ∘ (dy − y·dy) for y = softmax(z)):

    dA = dα Mᵀ,  dπ = dA ∘ s + d offset e,  dg = π ∘ (dπ − π·dπ),  dL = dg ∘ s
    ds = Σ_b (dg ∘ L + dA ∘ π),  d shift = Σ_b dg,  de = Σ_b d offset π,  dt = dL M
    dM = dLᵀ t + (π ∘ s)ᵀ dα  (a product with 2B terms),  dS = M ∘ (dM − rowsum(dM ∘ M))
    dQ = dS K,  dK = dSᵀ Q

dM is never stored apart from dS (it is written in place of it, row by row). The three products
with P·C·D terms (Q Kᵀ, dS K, dSᵀ Q: 0.58 GFLOP a step at full size) run through one register
tile of 8 rows × 32 columns (16 AVX-512 accumulators), where MKL's kernels, which torch's bmm
calls, run their AVX2 code path on the machine the REPORT names. The same tile computes the
queries' linear layer (cell_linear: x Wᵀ per cell, and dy W, dyᵀ x in its backward; 0.15 GFLOP a
step), which torch runs through MKL too.
The softmax's exp is a degree-6 polynomial after the usual range reduction, in AVX-512 for
float32, and std::exp otherwise. Sums follow loop order; the long ones (over C) run in vector
lanes added in float64 at the end, as in the block's kernels.

Building. The extension is compiled at first use with the machine's C++ compiler (g++ with
-O3 -march=native; tens of seconds) by torch.utils.cpp_extension, which caches it under
TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions) and rebuilds it when the source changes.
-march=native makes the binary specific to the CPU's instruction sets, so the module's name
carries a hash of them: a home directory shared by an AVX2 and an AVX-512 machine keeps one build
for each.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from types import ModuleType

import torch

from backends import native
from backends.native import KernelBuildError
from backends.spec import LN_EPS

SOURCE = Path(__file__).with_name("fused_block.cpp")
# Columns per parallel task in fused_block.cpp (its LANES, which the module exports: a test checks
# that they agree); the tests size their shapes from it without building the extension.
LANES = 32


def _ninja_on_path() -> None:
    """torch's builder runs `ninja` by name. The pinned pip package puts it in the virtualenv's
    bin folder, which is not on PATH when the venv's python is run without activating it."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return  # the build then fails with torch's own "Ninja is required" message
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


@functools.cache
def kernels() -> ModuleType:
    """The compiled extension (built on the first call in a machine's lifetime, then loaded)."""
    from torch.utils import cpp_extension

    _ninja_on_path()
    try:
        # torch rebuilds when the source changes but does not look at included headers, so the
        # header's hash is part of the module's name.
        return cpp_extension.load(
            name=f"trompt_fused_block_{native.isa_tag()}_{native.source_tag(*native.KERNEL_HEADERS)}",
            sources=[str(SOURCE)], extra_include_paths=[str(native.FUSED_BLOCK_HEADER.parent)],
            extra_cflags=["-O3", "-march=native", "-std=c++20", "-fopenmp"], extra_ldflags=["-fopenmp"])
    except (RuntimeError, OSError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KernelBuildError(f"the r5-fused C++ kernels could not be built ({first}); they need g++ "
                               "and ninja (pip install ninja)") from None


# ---------------------------------------------------------------------------------------------
# torch custom ops around the kernels: opaque to torch.compile, which traces the autograd
# Functions below through them (their fake implementations give it the output shapes).


@torch.library.custom_op("trompt_fused::stats_forward", mutates_args=())
def stats_forward(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(μ, r, t_raw), each (N, B, C) in w's dtype."""
    mean, rstd, t_raw = kernels().stats_forward(x, w, bias, u, LN_EPS)
    return mean, rstd, t_raw


@stats_forward.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = (w.shape[0], x.shape[0], w.shape[2])
    return tuple(w.new_empty(shape) for _ in range(3))


@torch.library.custom_op("trompt_fused::block_backward", mutates_args=())
def block_backward(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor,
                   mean: torch.Tensor, rstd: torch.Tensor, g_mean: torch.Tensor, g_rstd: torch.Tensor,
                   g_traw: torch.Tensor, q: torch.Tensor, g_z: torch.Tensor, want_gx: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g_x, g_W, g_Bias, g_u) from both Functions' shares of g_H; g_x is empty unless want_gx."""
    g_x, g_w, g_bias, g_u = kernels().block_backward(x, w, bias, u, mean, rstd, g_mean, g_rstd, g_traw,
                                                     q, g_z, want_gx)
    return g_x, g_w, g_bias, g_u


@block_backward.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor, mean: torch.Tensor,
      rstd: torch.Tensor, g_mean: torch.Tensor, g_rstd: torch.Tensor, g_traw: torch.Tensor, q: torch.Tensor,
      g_z: torch.Tensor, want_gx: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (x.new_empty(x.shape if want_gx else (0,), dtype=w.dtype), torch.empty_like(w),
            torch.empty_like(bias), torch.empty_like(u))


@torch.library.custom_op("trompt_fused::pool_forward", mutates_args=())
def pool_forward(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                 q: torch.Tensor) -> torch.Tensor:
    """ẑ (N, B, D) in w's dtype."""
    return kernels().pool_forward(x, w, bias, mean, q)


@pool_forward.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, q: torch.Tensor
      ) -> torch.Tensor:
    return w.new_empty((w.shape[0], x.shape[0], w.shape[1]))


@torch.library.custom_op("trompt_fused::pool_grad_q", mutates_args=())
def pool_grad_q(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, g_z: torch.Tensor
                ) -> torch.Tensor:
    """g_q (N, B, C) = Σ_d (H − μ) g_ẑ."""
    return kernels().pool_grad_q(x, w, bias, mean, g_z)


@pool_grad_q.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, g_z: torch.Tensor
      ) -> torch.Tensor:
    return torch.empty_like(mean)


# ---------------------------------------------------------------------------------------------
# The autograd Functions
#
# W and Bias feed both Functions, so autograd would add two (N, C, D) gradients (and each kernel
# would write one): two passes over H and 12 MB of gradient traffic where one pass suffices. So
# EmbedStats also returns `handoff`, a zero tensor that only EmbedPool takes in, and EmbedPool's
# backward sends its share of g_H (q and g_ẑ, packed as (N, B, C + D)) back as handoff's
# gradient instead of computing g_W and g_Bias itself. EmbedStats's backward, which autograd
# runs after it (it feeds μ and r to everything downstream), then computes the whole g_H and the
# gradients of W, Bias, u and x in one pass. This relies on each EmbedStats output feeding one
# EmbedPool, as in model.forward_r5_fused: two pools on one handoff would add their packed q and
# g_ẑ instead of their products. If no pool uses handoff, its gradient is zero and so is the
# pool's share.


class EmbedStats(torch.autograd.Function):
    """(x (B, C), W (N, D, C), Bias (N, D, C), u (N, D)) -> (μ, r, t_raw) each (N, B, C), and
    handoff (N, B, C + D), zeros, for EmbedPool."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, rstd, t_raw = stats_forward(x, w, bias, u)
        # μ and r are saved for the backward: (N, B, C) numbers, against H's (N, B, C, D).
        ctx.save_for_backward(x, w, bias, u, mean, rstd)
        handoff = w.new_zeros((w.shape[0], x.shape[0], w.shape[2] + w.shape[1]))
        return mean, rstd, t_raw, handoff

    @staticmethod
    def backward(ctx, g_mean: torch.Tensor, g_rstd: torch.Tensor, g_traw: torch.Tensor,
                 g_handoff: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w, bias, u, mean, rstd = ctx.saved_tensors
        want_gx = ctx.needs_input_grad[0]
        q, g_z = g_handoff.split([w.shape[2], w.shape[1]], dim=-1)  # the pool's share (zeros if none)
        g_x, g_w, g_bias, g_u = block_backward(x, w, bias, u, mean, rstd, g_mean, g_rstd, g_traw, q, g_z,
                                               want_gx)
        return g_x if want_gx else None, g_w, g_bias, g_u


class EmbedPool(torch.autograd.Function):
    """(x (B, C), W, Bias (N, D, C), μ (N, B, C), q (N, B, C), handoff) -> ẑ (N, B, D)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                q: torch.Tensor, handoff: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w, bias, mean, q)
        return pool_forward(x, w, bias, mean, q)

    @staticmethod
    def backward(ctx, g_z: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w, bias, mean, q = ctx.saved_tensors
        g_q = pool_grad_q(x, w, bias, mean, g_z)
        g_mean = -q * g_z.sum(-1, keepdim=True)  # ẑ holds −μ_c q_c in every channel
        # x, W and Bias: their share goes through handoff to EmbedStats's backward.
        return None, None, None, g_mean, g_q, torch.cat([q, g_z], dim=-1)


# ---------------------------------------------------------------------------------------------
# The mask and the prompt pooling (backends/fused_mask.h), one autograd Function.


# custom_op's schema needs every tuple's length spelled out
Tensors5 = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Tensors6 = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@torch.library.custom_op("trompt_fused::mask_forward", mutates_args=())
def mask_forward(query: torch.Tensor, key: torch.Tensor, t: torch.Tensor, scale: torch.Tensor,
                 shift: torch.Tensor, expand_bias: torch.Tensor) -> Tensors5:
    """(α (N, B, C), offset (N, B, 1)) and, for the backward, M (N, P, C), L and π (N, B, P)."""
    alpha, offset, mask, logits, weights = kernels().mask_forward(query, key, t, scale, shift, expand_bias)
    return alpha, offset, mask, logits, weights


@mask_forward.register_fake
def _(query: torch.Tensor, key: torch.Tensor, t: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
      expand_bias: torch.Tensor) -> Tensors5:
    (N, P, _), C, B = query.shape, key.shape[1], t.shape[1]
    shapes = ((N, B, C), (N, B, 1), (N, P, C), (N, B, P), (N, B, P))
    return tuple(query.new_empty(shape) for shape in shapes)


@torch.library.custom_op("trompt_fused::mask_backward", mutates_args=())
def mask_backward(query: torch.Tensor, key: torch.Tensor, t: torch.Tensor, scale: torch.Tensor,
                  expand_bias: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor,
                  g_alpha: torch.Tensor, g_offset: torch.Tensor) -> Tensors6:
    """The gradients of query, key, t, scale, shift and expand_bias."""
    return tuple(kernels().mask_backward(query, key, t, scale, expand_bias, mask, logits, weights, g_alpha,
                                         g_offset))


@mask_backward.register_fake
def _(query: torch.Tensor, key: torch.Tensor, t: torch.Tensor, scale: torch.Tensor, expand_bias: torch.Tensor,
      mask: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor, g_alpha: torch.Tensor,
      g_offset: torch.Tensor) -> Tensors6:
    return tuple(torch.empty_like(a) for a in (query, key, t, scale, scale, expand_bias))


class MaskPool(torch.autograd.Function):
    """(Q (N, P, D), K (N, C, D), t (N, B, C), s, shift, e (N, P)) -> (α (N, B, C), π·e (N, B, 1)).
    Saves M, L and π (the mask is needed by every product of the backward)."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, t: torch.Tensor, scale: torch.Tensor,
                shift: torch.Tensor, expand_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, offset, mask, logits, weights = mask_forward(query, key, t, scale, shift, expand_bias)
        ctx.save_for_backward(query, key, t, scale, expand_bias, mask, logits, weights)
        return alpha, offset

    @staticmethod
    def backward(ctx, g_alpha: torch.Tensor, g_offset: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return mask_backward(*ctx.saved_tensors, g_alpha, g_offset)


def mask_pool(query: torch.Tensor, key: torch.Tensor, t: torch.Tensor, scale: torch.Tensor,
              shift: torch.Tensor, expand_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """α = (π ∘ s) M and π·e, with M = softmax_c(Q Kᵀ) and π = softmax_p(s ∘ (t Mᵀ) + shift): the
    importance mask and r5's prompt pooling (model._reassociated_pooling) in fused kernels."""
    return MaskPool.apply(query, key, t, scale, shift, expand_bias)


# ---------------------------------------------------------------------------------------------
# A linear layer per cell, y = x Wᵀ, on the same register tile (the mask's queries).


@torch.library.custom_op("trompt_fused::cell_matmul", mutates_args=())
def cell_matmul(a: torch.Tensor, b: torch.Tensor, trans_a: bool, trans_b: bool) -> torch.Tensor:
    """op(a) @ op(b) for each cell of the leading axis, op a transpose where asked."""
    return kernels().cell_matmul(a, b, trans_a, trans_b)


@cell_matmul.register_fake
def _(a: torch.Tensor, b: torch.Tensor, trans_a: bool, trans_b: bool) -> torch.Tensor:
    return a.new_empty((a.shape[0], a.shape[2 if trans_a else 1], b.shape[1 if trans_b else 2]))


class CellLinear(torch.autograd.Function):
    """(x (N, M, K), W (N, J, K)) -> x Wᵀ (N, M, J); backward dx = dy W, dW = dyᵀ x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return cell_matmul(x, w, False, True)

    @staticmethod
    def backward(ctx, g_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, w = ctx.saved_tensors
        g_y = g_y.contiguous()
        return cell_matmul(g_y, w, False, False), cell_matmul(g_y, x, True, False)


def cell_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x Wᵀ per cell: x (N, M, K), W (N, J, K) -> (N, M, J)."""
    return CellLinear.apply(x, w)


def embed_stats(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, u: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """μ, r and t_raw = (H − μ)·u of H = relu(x W + Bias), each (N, B, C), and the handoff for
    `embed_pool`; H is never stored."""
    return EmbedStats.apply(x, w, bias, u)


def embed_pool(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
               q: torch.Tensor, handoff: torch.Tensor) -> torch.Tensor:
    """ẑ = Σ_c q_c (H[c,:] − μ_c), (N, B, D); H is never stored. Its gradients for x, W and Bias
    are computed by embed_stats's backward (see handoff above)."""
    return EmbedPool.apply(x, w, bias, mean, q, handoff)
