"""The modified Trompt in tinygrad, computed by the exact R5 rewrite (docs/SPEC.md §7).

The same algorithm as backends/mlx/model.py, written in tinygrad's Tensor API:
  - the six cells are stacked on a leading axis N and run as batched operations (F1);
  - the importance mask M (N, P, C) depends on parameters only: computed once per step (F2);
  - the (B, P, C, D) expansion and the (B, P, D) cell output are never built: the downstream
    head is reassociated so each sample and cell needs C-vectors only (F3-F5);
  - the feature LayerNorm's affine part is folded into those C-vectors (F6).
tinygrad's autodiff (`Tensor.gradient`) differentiates this forward. Its scheduler fuses lazily
built expressions into every kernel that reads them, recomputing them each time; the few
`.contiguous()` calls below store the intermediates that many kernels (forward and backward)
read, which cut the CPU time of a full-size step by ~27% (docs/REPORT.md).

Shapes: B batch, C columns, P prompts, D d_model, N cycles (= cells).
Parameters live "stacked": one (N, ...) tensor per per-cell leaf name (see `stack_cells`).
"""

from __future__ import annotations

import numpy as np
from tinygrad import Tensor, dtypes

from backends.spec import LN_EPS

TINYGRAD_DTYPES = {"float32": dtypes.float32, "float64": dtypes.float64}


def to_tensors(stacked: dict[str, np.ndarray], dtype: str, device: str) -> dict[str, Tensor]:
    """Realized device tensors (`contiguous` gives each its own buffer, so `assign` can update it)."""
    return {k: Tensor(np.ascontiguousarray(v, dtype=dtype), device=device, dtype=TINYGRAD_DTYPES[dtype])
            .contiguous().realize() for k, v in stacked.items()}


def to_numpy(tree: dict[str, Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in tree.items()}


# -- the model ----------------------------------------------------------------------------------

def layer_norm(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """LayerNorm over the last axis, two-pass variance like torch."""
    centred = h - h.mean(axis=-1, keepdim=True)
    var = (centred * centred).mean(axis=-1, keepdim=True)
    return centred * (var + LN_EPS).rsqrt() * weight + bias


def importance_mask(p: dict[str, Tensor]) -> Tensor:
    """M = softmax_c(Q K^T) for all cells: (N, P, C). Parameters only, so once per step (F2)."""
    emb_prompt = p["emb_prompt"]  # (N, P, D)
    n_cells, n_prompts, d_model = emb_prompt.shape
    prompt = p["prompt"].reshape(1, n_prompts, d_model).expand(n_cells, n_prompts, d_model)
    normed = layer_norm(emb_prompt, p["ln_prompt.weight"].unsqueeze(1), p["ln_prompt.bias"].unsqueeze(1))
    fused = normed.cat(prompt, dim=-1)  # (N, P, 2D)
    query = fused @ p["dense_imp.weight"].transpose(1, 2) + p["dense_imp.bias"].unsqueeze(1) + emb_prompt
    key = layer_norm(p["emb_column"], p["ln_col.weight"].unsqueeze(1), p["ln_col.bias"].unsqueeze(1))
    return (query @ key.transpose(1, 2)).softmax(axis=-1).contiguous()  # (N, P, C)


def cell_features(p: dict[str, Tensor], x: Tensor, mask: Tensor) -> Tensor:
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
    batch, n_columns = x.shape
    h = (x.reshape(1, batch, n_columns, 1) * p["feature_emb_weight"].unsqueeze(1)
         + p["feature_emb_bias"].unsqueeze(1)).relu().contiguous()  # (N, B, C, D)
    mean = h.mean(axis=-1).contiguous()  # (N, B, C)
    centred = h - mean.unsqueeze(-1)
    rstd = ((centred * centred).mean(axis=-1) + LN_EPS).rsqrt().contiguous()  # (N, B, C)

    # t_c = E_c . v = rstd_c * (H_c . (gamma*v) - mean_c * sum(gamma*v)) + beta . v
    u = gamma * v  # (N, D)
    h_dot_u = (h * u.reshape(u.shape[0], 1, 1, u.shape[1])).sum(axis=-1)  # (N, B, C)
    t = rstd * (h_dot_u - mean * u.sum(axis=-1).reshape(-1, 1, 1)) + (beta @ v).reshape(-1, 1, 1)
    t = t.contiguous()  # (N, B, C)

    logits = (scale.unsqueeze(1) * (t @ mask.transpose(1, 2))  # (N, B, P)
              + (shift * v.sum()).unsqueeze(1) + p["tdown.dense0.bias"])
    pi = logits.softmax(axis=-1).contiguous()  # over prompts
    alpha = ((pi * scale.unsqueeze(1)) @ mask).contiguous()  # (N, B, C)

    # z = gamma * sum_c alpha_c rstd_c (H_c - mean_c) + beta * sum_c alpha_c + pi . e
    weights = alpha * rstd  # (N, B, C)
    pooled_h = (weights.unsqueeze(-1) * h).sum(axis=2)  # (N, B, D)
    centred_sum = pooled_h - (weights * mean).sum(axis=-1).unsqueeze(-1)
    beta_term = beta.unsqueeze(1) * alpha.sum(axis=-1).unsqueeze(-1)  # (N, B, D)
    shift_term = (pi * shift.unsqueeze(1)).sum(axis=-1).unsqueeze(-1)  # (N, B, 1)
    return gamma.unsqueeze(1) * centred_sum + beta_term + shift_term


def head(p: dict[str, Tensor], z: Tensor) -> Tensor:
    """Shared downstream MLP: (N, B, D) -> (N, B)."""
    hidden = (z @ p["tdown.dense1.weight"].T + p["tdown.dense1.bias"]).relu()
    hidden = layer_norm(hidden, p["tdown.ln.weight"], p["tdown.ln.bias"])
    return (hidden @ p["tdown.dense_out.weight"].T)[..., 0] + p["tdown.dense_out.bias"]


def forward(p: dict[str, Tensor], x: Tensor) -> Tensor:
    """Predictions (B, N) for x (B, C), like reference.model.Trompt.forward."""
    return head(p, cell_features(p, x, importance_mask(p))).T


def mse_over_cycles(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean over B * N of (prediction - y)^2: the same target for every cycle."""
    return ((forward(p, x) - y.unsqueeze(1)) ** 2).mean()
