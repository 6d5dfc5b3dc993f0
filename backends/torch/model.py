"""The modified Trompt in PyTorch, rewritten step by step into the fastest exact form.

Every variant computes the same function as `reference/model.py` (docs/SPEC.md); only the
order of the arithmetic changes, so results agree with the reference to rounding (float64: ~1e-13).
The ladder of rewrites, each a function `(params, x) -> (B, N)` predictions:

    r2  per-cell loop; the importance mask once per batch (F2); the (B, P, C, D) expansion
        collapsed into one (P, C) @ (C, D) product per sample (F3, F4)
    r3  r2 with the N cells stacked along a leading axis and computed as batched ops (F1)
    r4  r3 with the downstream head reassociated (F5): no (B, N, P, D) tensor at all
    r5  r4 with the embedding LayerNorm's affine folded into the head (F6): E is never built,
        only H = relu(x * W + Bias) and its per-(b, c) mean and inverse std
    r5-fused  r5 whose passes over H run in fused C++ kernels (fused.py) that recompute H
        instead of storing it, and whose mask and prompt pooling run in fused kernels too (CPU
        only); W and Bias are stored (N, D, C) for them (TRANSPOSED)

Parameters live "stacked": the six cells' copies of a canonical tensor `tcells.{n}.NAME` form one
tensor `NAME` of shape (N, ...), so a batched op serves all cells. `stack_params`/`unstack`
convert between the canonical dict (backends/spec.py) and this layout; AdamW is element-wise, so
optimising the stacked tensors is the same update as optimising the canonical ones.

The two dead parameters of F7 (every ln_col.bias and tdown.dense0.bias) get their true gradient,
exactly zero, instead of the reference's rounding noise (the gradient buffers exist and are zero,
so AdamW still applies the weight decay to them, as the original does).

Shapes: B batch, C columns, P prompts, D d_model, N cells (= cycles).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from backends.spec import CELL_PARAMS, LN_EPS, TromptConfig

Params = dict[str, torch.Tensor]
# The stacked parameters every variant detaches: their true gradient is exactly zero (F7).
DETACHED_PARAMS = ("ln_col.bias", "tdown.dense0.bias")
# Stacked parameters a variant keeps transposed, (N, D, C) instead of (N, C, D): r5-fused's
# kernels read W and Bias channels-major, in place (fused.py, "Layout").
TRANSPOSED: dict[str, tuple[str, ...]] = {"r5-fused": ("feature_emb_weight", "feature_emb_bias")}


# ---------------------------------------------------------------------------------------------
# Parameter layout


def stack_params(params: dict[str, np.ndarray], cfg: TromptConfig, cells: list[int] | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 transposed: tuple[str, ...] = ()) -> Params:
    """Canonical numpy dict -> stacked torch tensors; `cells` picks a subset (cell parallelism);
    the cell parameters named in `transposed` are stored (N, D, C) (see TRANSPOSED)."""
    cells = list(range(cfg.n_cycles)) if cells is None else cells

    def to_torch(array: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    stacked = {"prompt": to_torch(params["prompt"])}
    for name in CELL_PARAMS:
        cell_stack = np.stack([params[f"tcells.{n}.{name}"] for n in cells])
        stacked[name] = to_torch(cell_stack.swapaxes(1, 2) if name in transposed else cell_stack)
    for name in params:
        if name.startswith("tdown."):
            stacked[name] = to_torch(params[name])
    return stacked


def unstack(stacked: dict[str, torch.Tensor], cfg: TromptConfig, cells: list[int] | None = None,
            transposed: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Stacked tensors (or their gradients) -> canonical numpy dict (only the given cells)."""
    cells = list(range(cfg.n_cycles)) if cells is None else cells
    out: dict[str, np.ndarray] = {}
    for name, tensor in stacked.items():
        array = tensor.detach().cpu().numpy()
        if name in transposed:
            array = array.swapaxes(1, 2)
        if name in CELL_PARAMS:
            for i, n in enumerate(cells):
                out[f"tcells.{n}.{name}"] = array[i].copy()
        else:
            out[name] = array.copy()
    return out


# ---------------------------------------------------------------------------------------------
# Building blocks shared by every variant


def layer_norm(t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis with per-cell affine: weight/bias are (N, D) and broadcast
    against t of shape (N, ..., D)."""
    shape = (weight.shape[0],) + (1,) * (t.dim() - 2) + (weight.shape[1],)
    return F.layer_norm(t, t.shape[-1:], eps=LN_EPS) * weight.view(shape) + bias.view(shape)


def importance_mask(p: Params) -> torch.Tensor:
    """M (N, P, C): softmax over columns of Q Kᵀ. It depends on parameters only (F2), so it is
    computed once per step instead of once per sample as the reference does."""
    query, key = queries_and_keys(p)
    return torch.softmax(query @ key.transpose(1, 2), dim=-1)  # (N, P, C)


def queries_and_keys(p: Params, cell_linear: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask's Q (N, P, D) and K (N, C, D): M = softmax(Q Kᵀ) over the columns. `cell_linear`
    (x, W) -> x Wᵀ per cell, if given, computes dense_imp on the concatenated input instead."""
    emb_prompt = p["emb_prompt"]  # (N, P, D)
    D = emb_prompt.shape[-1]
    prompt_ln = layer_norm(emb_prompt, p["ln_prompt.weight"], p["ln_prompt.bias"])  # (N, P, D)
    if cell_linear is None:
        # dense_imp([LN(Ep) ‖ Π]) split into its two halves: the same sum, no concatenated copy.
        w_ln, w_prompt = p["dense_imp.weight"][:, :, :D], p["dense_imp.weight"][:, :, D:]  # (N, D, D) each
        imp = prompt_ln @ w_ln.transpose(1, 2) + p["prompt"] @ w_prompt.transpose(1, 2)
    else:
        imp_input = torch.cat([prompt_ln, p["prompt"].expand_as(prompt_ln)], dim=-1)  # (N, P, 2D)
        imp = cell_linear(imp_input, p["dense_imp.weight"])
    query = imp + p["dense_imp.bias"].unsqueeze(1) + emb_prompt  # (N, P, D)
    # ln_col.bias adds the constant Q·β to every logit of a row, which softmax ignores (F7): its
    # true gradient is exactly zero, so it takes none (AdamW then only decays it, as it should).
    key = layer_norm(p["emb_column"], p["ln_col.weight"], p["ln_col.bias"].detach())  # (N, C, D)
    return query, key


def head_mlp(z: torch.Tensor, p: Params) -> torch.Tensor:
    """The shared head after the prompt pooling: (..., D) -> (...)."""
    hidden = F.relu(z @ p["tdown.dense1.weight"].T + p["tdown.dense1.bias"])
    hidden = F.layer_norm(hidden, hidden.shape[-1:], p["tdown.ln.weight"], p["tdown.ln.bias"], LN_EPS)
    return (hidden @ p["tdown.dense_out.weight"].T + p["tdown.dense_out.bias"]).squeeze(-1)


def pooled_head(o: torch.Tensor, p: Params, prompt_axis: int) -> torch.Tensor:
    """The original head on explicit prompt outputs O: softmax over prompts of O·v + v0, the
    weighted sum over prompts, then the MLP. Used by r2 and r3, which still build O."""
    # dense0.bias shifts every prompt logit equally (F7): exactly zero gradient, as above.
    logits = o @ p["tdown.dense0.weight"].T + p["tdown.dense0.bias"].detach()  # (..., P, ..., 1)
    weights = torch.softmax(logits, dim=prompt_axis)
    return head_mlp((weights * o).sum(dim=prompt_axis), p)


def embed(x: torch.Tensor, p: Params) -> torch.Tensor:
    """H = relu(x[b, c] * W[n, c] + Bias[n, c]) for all cells: (B, C) -> (N, B, C, D)."""
    return F.relu(x[None, :, :, None] * p["feature_emb_weight"][:, None] + p["feature_emb_bias"][:, None])


# ---------------------------------------------------------------------------------------------
# The rewrites


def forward_r2(p: Params, x: torch.Tensor) -> torch.Tensor:
    """Per-cell loop. Mask once per batch (F2). Collapsed expansion (F4): the reference pools
    Σ_c M[p,c]·((1+w_p)·E[c,d] + e_p); since each mask row sums to 1 (F3) this equals
    (1+w_p)·(M E)[p,d] + e_p — one (P, C) @ (C, D) product, no (P, C, D) tensor."""
    mask = importance_mask(p)  # (N, P, C)
    outputs = []
    for n in range(mask.shape[0]):
        h = F.relu(x.unsqueeze(-1) * p["feature_emb_weight"][n] + p["feature_emb_bias"][n])  # (B, C, D)
        emb = F.layer_norm(h, h.shape[-1:], p["ln_emb.weight"][n], p["ln_emb.bias"][n], LN_EPS)
        pooled = torch.matmul(mask[n], emb)  # (B, P, D)
        scale = 1 + p["dense_expand.weight"][n]  # (P, 1)
        o = scale * pooled + p["dense_expand.bias"][n].unsqueeze(-1)  # (B, P, D)
        outputs.append(pooled_head(o, p, prompt_axis=1))  # (B,)
    return torch.stack(outputs, dim=1)  # (B, N)


def forward_r3(p: Params, x: torch.Tensor) -> torch.Tensor:
    """r2 with the cells stacked (F1). E is laid out (N, C, B, D) so that M E for every sample is
    ONE bmm over cells of (P, C) @ (C, B·D): a broadcast matmul of (N, P, C) against (B, N, C, D)
    would copy the mask B times."""
    N, B = p["feature_emb_weight"].shape[0], x.shape[0]
    mask = importance_mask(p)  # (N, P, C)
    h = F.relu(x.T[None, :, :, None] * p["feature_emb_weight"][:, :, None]
               + p["feature_emb_bias"][:, :, None])  # (N, C, B, D)
    emb = layer_norm(h, p["ln_emb.weight"], p["ln_emb.bias"])  # (N, C, B, D)
    C, D = emb.shape[1], emb.shape[3]
    pooled = torch.bmm(mask, emb.reshape(N, C, B * D)).view(N, -1, B, D)  # (N, P, B, D)
    scale = 1 + p["dense_expand.weight"]  # (N, P, 1)
    o = scale.unsqueeze(-1) * pooled + p["dense_expand.bias"][:, :, None, None]  # (N, P, B, D)
    return pooled_head(o, p, prompt_axis=1).T  # (B, N)


def _reassociated_pooling(t: torch.Tensor, mask: torch.Tensor, p: Params
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's prompt softmax and pooling without O (F5).

    O[p] = s_p (M E)[p] + e_p with s = 1 + w, so the head logit O[p]·v + v0 equals
    s_p (M t)[p] + e_p Σv + v0 with t = E v (one number per column), and the pooled vector
    Σ_p π_p O[p] equals αᵀE + (π·e) 1 with α = Mᵀ(π ∘ s) (one weight per column).
    t: (N, B, C). Returns α (N, B, C) and the constant π·e (N, B, 1).
    """
    scale = 1 + p["dense_expand.weight"].squeeze(-1)  # (N, P)
    expand_bias = p["dense_expand.bias"]  # (N, P)
    v = p["tdown.dense0.weight"][0]  # (D,)
    logits = (scale.unsqueeze(1) * torch.bmm(t, mask.transpose(1, 2))  # (N, B, P)
              + (expand_bias * v.sum()).unsqueeze(1) + p["tdown.dense0.bias"].detach())  # F7
    weights = torch.softmax(logits, dim=-1)  # π: (N, B, P)
    alpha = torch.bmm(weights * scale.unsqueeze(1), mask)  # (N, B, C)
    offset = (weights * expand_bias.unsqueeze(1)).sum(-1, keepdim=True)  # (N, B, 1)
    return alpha, offset


def forward_r4(p: Params, x: torch.Tensor) -> torch.Tensor:
    """r3 with the head reassociated (F5): per sample and cell only C-vectors and one D-vector."""
    mask = importance_mask(p)  # (N, P, C)
    emb = layer_norm(embed(x, p), p["ln_emb.weight"], p["ln_emb.bias"])  # (N, B, C, D)
    t = emb @ p["tdown.dense0.weight"][0]  # (N, B, C)
    alpha, offset = _reassociated_pooling(t, mask, p)
    z = (alpha.unsqueeze(-2) @ emb).squeeze(-2) + offset  # (N, B, D)
    return head_mlp(z, p).T  # (B, N)


def forward_r5(p: Params, x: torch.Tensor) -> torch.Tensor:
    """r4 with the embedding LayerNorm's affine folded away (F6). With E = γ∘(H − μ)·r + β
    (μ, r the per-(b, c) mean and inverse std of H over D):
        t = E v = r (H u − μ Σu) + β·v            with u = γ ∘ v
        αᵀE    = γ ∘ ((α r)ᵀ H − Σ_c α_c r_c μ_c) + β Σ_c α_c
    so only H (N, B, C, D) is ever materialised, never E."""
    mask = importance_mask(p)  # (N, P, C)
    h = embed(x, p)  # (N, B, C, D)
    # Biased variance as E[h²] − μ²: on CPU two plain reductions are faster than var_mean's
    # Welford kernel. It is well conditioned here because h = relu(·) ≥ 0 has var comparable to μ²
    # (about half of each row is zero), so the subtraction loses at most a bit or two.
    mean = h.mean(-1)  # (N, B, C)
    var = (h * h).mean(-1) - mean * mean  # (N, B, C)
    rstd = torch.rsqrt(var + LN_EPS)
    gamma, beta = p["ln_emb.weight"], p["ln_emb.bias"]  # (N, D)
    v = p["tdown.dense0.weight"][0]  # (D,)
    u = gamma * v  # (N, D)
    hu = (h @ u[:, None, :, None]).squeeze(-1)  # (N, B, C)
    t = rstd * (hu - mean * u.sum(-1)[:, None, None]) + (beta @ v)[:, None, None]  # (N, B, C)
    alpha, offset = _reassociated_pooling(t, mask, p)
    alpha_r = alpha * rstd  # (N, B, C)
    centred = (alpha_r.unsqueeze(-2) @ h).squeeze(-2) - (alpha_r * mean).sum(-1, keepdim=True)  # (N, B, D)
    z = gamma.unsqueeze(1) * centred + beta.unsqueeze(1) * alpha.sum(-1, keepdim=True) + offset
    return head_mlp(z, p).T  # (B, N)


def forward_r5_fused(p: Params, x: torch.Tensor) -> torch.Tensor:
    """r5 with everything it does with H in fused CPU kernels (fused.py): H is recomputed from
    x inside each pass instead of being stored, and the variance is two-pass. The kernels return
    μ, r, t_raw = (H − μ)·u and ẑ = Σ_c q_c (H_c − μ_c). The mask and the head's prompt pooling
    (importance_mask, _reassociated_pooling) run in fused kernels as well (fused.mask_pool); the
    mask's Q and K, the head's MLP and the algebra of F5/F6 stay here for torch.compile."""
    if x.device.type != "cpu":
        raise ValueError(f"variant r5-fused runs on the CPU only (C++ CPU kernels), not on {x.device.type}")
    from backends.torch import fused  # the kernels' ops are registered only when this variant runs

    w, bias = p["feature_emb_weight"], p["feature_emb_bias"]  # (N, D, C): TRANSPOSED
    gamma, beta = p["ln_emb.weight"], p["ln_emb.bias"]  # (N, D)
    v = p["tdown.dense0.weight"][0]  # (D,)
    x = x.to(w.dtype)  # under autocast the block stays in the parameters' dtype
    mean, rstd, t_raw, handoff = fused.embed_stats(x, w, bias, gamma * v)  # (N, B, C) each
    t = rstd * t_raw + (beta @ v)[:, None, None]  # (N, B, C)
    # The mask and _reassociated_pooling in one fused Function: the same terms, F7's detach included.
    query, key = queries_and_keys(p, fused.cell_linear)
    scale, expand_bias = 1 + p["dense_expand.weight"].squeeze(-1), p["dense_expand.bias"]  # (N, P)
    shift = expand_bias * v.sum() + p["tdown.dense0.bias"].detach()  # (N, P)
    alpha, offset = fused.mask_pool(query.to(w.dtype), key.to(w.dtype), t.to(w.dtype), scale.to(w.dtype),
                                    shift.to(w.dtype), expand_bias.to(w.dtype))
    centred = fused.embed_pool(x, w, bias, mean, (alpha * rstd).to(w.dtype), handoff)  # (N, B, D)
    z = gamma.unsqueeze(1) * centred + beta.unsqueeze(1) * alpha.sum(-1, keepdim=True) + offset
    return head_mlp(z, p).T  # (B, N)


VARIANTS: dict[str, Callable[[Params, torch.Tensor], torch.Tensor]] = {
    "r2": forward_r2,
    "r3": forward_r3,
    "r4": forward_r4,
    "r5": forward_r5,
    "r5-fused": forward_r5_fused,
}


def sum_squared_error(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ over batch and cycles of (ŷ − y)²; the loss is this over B·N (the global B·N when the
    batch or the cells are split over ranks, so that the ranks' losses add up to the original)."""
    return ((pred - y.unsqueeze(1)) ** 2).sum()
