"""The modified Trompt in Flax NNX, with the cells stacked along a leading axis.

Same numbers as `reference/model.py`, computed by the exact rewrites of docs/SPEC.md
(F1-F8 below are its labels):

* "r5" (default): the importance mask once per step (F2), the expansion collapsed (F4), the
  downstream pooling reassociated (F5) and the ln_emb affine folded (F6), so per sample and cell
  nothing bigger than (C, D) exists and the (B, P, C, D) expansion never does; the per-sample
  part has a hand-derived backward (backward.py; see `r5_pool`), about 2x faster than autodiff's;
* "r5-autodiff": the same forward, differentiated by JAX (kept to show what the hand backward buys);
* "r5-fused" (CPU): r5 with its passes over H (two in the forward, two in the backward) and its
  mask with the head's prompt pooling in the C++ kernels the torch backend's r5-fused uses, called
  through XLA's FFI (fused.py): H is never stored, M is built from Q and K inside the kernels;
* "r3": mask once per step, Y = M E per sample and cell, the head on (B, N, P, D). A second,
  simpler code path, kept as a cross-check and as the "standard optimised" variant to time.

The N cells live in ONE `TromptCell` module whose parameters carry a leading axis of length N
(built with `nnx.vmap`, the Flax idiom for a stack of identical layers). Keeping the cell axis
first lets XLA batch the six cells into single kernels without (B, N, ...) transposes.

Parameter layout differs from torch in two ways, both handled by `to_pure_dict`/`from_pure_dict`:
Flax Linear stores `kernel` as (in, out) where torch stores `weight` as (out, in), and a
LayerNorm's weight is called `scale`. Shapes: B batch, C columns, P prompts, D d_model, N cells.
r5-fused also keeps W and Bias channels-major, (N, D, C) (TRANSPOSED), as the C++ kernels read
them: handed over in the stacked (N, C, D), they would be transposed at every call and their
gradients transposed back (XLA copies both); the XLA variants keep (N, C, D), which their own
fusions read fastest.
"""

from __future__ import annotations

from backends.jax import xla_flags  # noqa: F401  (it sets XLA_FLAGS, so it must precede jax)

# isort: split

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from backends.jax import fused as fused_kernels
from backends.jax.backward import R5Inputs, R5Residuals, r5_backward
from backends.spec import CELL_PARAMS, LN_EPS, TromptConfig

VARIANTS = ("r5", "r5-autodiff", "r5-fused", "r3")
# Cell parameters a variant stores transposed, (N, D, C) instead of (N, C, D) (see above).
TRANSPOSED: dict[str, tuple[str, ...]] = {"r5-fused": ("feature_emb_weight", "feature_emb_bias")}


def make_layer_norm(d_model: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # torch's eps (Flax defaults to 1e-6) and the exact two-pass variance: Flax's default
    # E[x^2] - E[x]^2 loses digits on Trompt's unscaled, relu'd features.
    return nnx.LayerNorm(d_model, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)


class TromptCell(nnx.Module):
    """One cell's parameters and computation; instantiated as a stack of N (see `Trompt`)."""

    def __init__(self, cfg: TromptConfig, rngs: nnx.Rngs, transposed: tuple[str, ...] = ()) -> None:
        C, P, D = cfg.n_columns, cfg.n_prompts, cfg.d_model
        # Values are always loaded from spec.init_params (see `build`); zeros are placeholders.
        self.transposed = transposed  # which of the two below are stored (D, C) (TRANSPOSED)
        def emb_shape(name: str) -> tuple[int, int]:
            return (D, C) if name in transposed else (C, D)

        self.feature_emb_weight = nnx.Param(jnp.zeros(emb_shape("feature_emb_weight")))
        self.feature_emb_bias = nnx.Param(jnp.zeros(emb_shape("feature_emb_bias")))
        self.emb_column = nnx.Param(jnp.zeros((C, D)))
        self.emb_prompt = nnx.Param(jnp.zeros((P, D)))
        self.ln_emb = make_layer_norm(D, rngs)
        self.ln_col = make_layer_norm(D, rngs)
        self.ln_prompt = make_layer_norm(D, rngs)
        self.dense_imp = nnx.Linear(2 * D, D, rngs=rngs)
        self.dense_expand = nnx.Linear(1, P, rngs=rngs)

    def mask(self, prompt: jax.Array) -> jax.Array:
        """Importance mask M (P, C): a function of the parameters only, so once per step (F2)."""
        query, key = self.queries_and_keys(prompt)
        return jax.nn.softmax(query @ key.T, axis=-1)  # (P, C)

    def queries_and_keys(self, prompt: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The mask's Q (P, D) and K (C, D): M = softmax(Q Kᵀ) over the columns."""
        fused = jnp.concatenate([self.ln_prompt(self.emb_prompt[...]), prompt], axis=-1)  # (P, 2D)
        query = self.dense_imp(fused) + self.emb_prompt[...]  # (P, D); residual is the raw emb_prompt
        return query, self.ln_col(self.emb_column[...])

    def emb_weight_bias(self) -> tuple[jax.Array, jax.Array]:
        """W and Bias (C, D), however stored (a stored (D, C) one is handed over transposed)."""
        w, b = self.feature_emb_weight[...], self.feature_emb_bias[...]
        return (w.T if "feature_emb_weight" in self.transposed else w,
                b.T if "feature_emb_bias" in self.transposed else b)

    def embed(self, x: jax.Array) -> jax.Array:
        """Feature embedding E = LN(relu(x W + Bias)) of every scalar x[b, c]: (B, C, D)."""
        w, b = self.emb_weight_bias()
        hidden = jax.nn.relu(x[:, :, None] * w + b)
        return self.ln_emb(hidden)

    def expansion_scale_shift(self) -> tuple[jax.Array, jax.Array]:
        """dense_expand as s = 1 + w (the residual folded in) and e: X~[p] = s[p] E + e[p]."""
        w = self.dense_expand.kernel[...][0]  # kernel (1, P) -> (P,)
        return 1.0 + w, self.dense_expand.bias[...]

    def pooled_r3(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """Cell output O (B, P, D) with the expansion collapsed (F4): O = s * (M E) + e."""
        s, e = self.expansion_scale_shift()
        y = jnp.einsum("pc,bcd->bpd", mask, self.embed(x))  # (B, P, D)
        return s[:, None] * y + e[:, None]

    def pooled_r5(self, x: jax.Array, mask: jax.Array | None, v: jax.Array, v0: jax.Array,
                  variant: str = "r5", prompt: jax.Array | None = None) -> jax.Array:
        """The downstream's attention-pooled vector z (B, D) without building O (F5, F6).

        v, v0: the head's dense0 weight (D,) and bias (); the head's softmax over prompts uses
        logits O[p] . v + v0, which F5 rewrites through t = E v, a C-vector per sample.
        r5-fused takes the prompt instead of the mask: its kernels compute M from Q and K.
        """
        s, e = self.expansion_scale_shift()
        pool = POOLS[variant]
        query, key = self.queries_and_keys(prompt) if variant == "r5-fused" else (None, None)
        w, b = self.emb_weight_bias()  # r5-fused: fused.py transposes them back, which XLA cancels
        return pool(R5Inputs(x=x, w=w, b=b,
                             gamma=self.ln_emb.scale[...], beta=self.ln_emb.bias[...], s=s, e=e,
                             mask=mask, v=v, v0=v0, query=query, key=key))


# ---------------------------------------------------------------------------------------------
# The per-sample part of R5 for one cell; its hand-derived backward is in backward.py.


def r5_forward(inp: R5Inputs, fused: bool = False) -> tuple[jax.Array, R5Residuals]:
    """The attention-pooled vector z (B, D) of one cell, and what the backward needs. `fused`:
    the two passes over H run in the C++ kernels of fused.py instead of XLA's code."""
    u = inp.gamma * inp.v
    if fused:
        mean, rstd, t_raw = fused_kernels.stats_forward(inp.x, inp.w, inp.b, u)  # (B, C) each
    else:
        hidden = jax.nn.relu(inp.x[:, :, None] * inp.w + inp.b)  # (B, C, D)
        mean = hidden.mean(axis=-1)  # (B, C)
        centred = hidden - mean[..., None]
        rstd = jax.lax.rsqrt((centred * centred).mean(axis=-1) + LN_EPS)  # exact (two-pass) variance
        t_raw = centred @ u  # (B, C)
    t = rstd * t_raw + inp.beta @ inp.v  # t = E v with E = gamma * centred * rstd + beta, E never built
    if fused:  # the mask, the softmax over prompts and alpha in one kernel (fused.py)
        alpha, offset, mask, m_t, weights = fused_kernels.mask_forward(inp.query, inp.key, t, inp.s,
                                                                       inp.e * inp.v.sum() + inp.v0, inp.e)
        offset = offset[:, 0]  # weights @ e
    else:
        mask = None  # the residuals' inputs hold it
        m_t = t @ inp.mask.T  # (B, P)
        logits = inp.s * m_t + inp.e * inp.v.sum() + inp.v0
        weights = jax.nn.softmax(logits, axis=-1)  # (B, P): the head's pooling weights over prompts
        alpha = (weights * inp.s) @ inp.mask  # (B, C): column weights of the pooled vector
        offset = weights @ inp.e
    q = alpha * rstd
    if fused:
        zc = fused_kernels.pool_forward(inp.x, inp.w, inp.b, mean, q)
    else:
        zc = jnp.einsum("bc,bcd->bd", q, centred)  # sum_c alpha_c rstd_c centred_c
    a_sum = alpha.sum(-1)
    z = inp.gamma * zc + inp.beta * a_sum[:, None] + offset[:, None]  # (B, D)
    return z, R5Residuals(inputs=inp, mean=mean, rstd=rstd, u=u, t_raw=t_raw, t=t, m_t=m_t,
                          weights=weights, alpha=alpha, q=q, zc=zc, a_sum=a_sum, mask=mask)


def r5_pool_autodiff(inp: R5Inputs) -> jax.Array:
    return r5_forward(inp)[0]


@jax.custom_vjp
def r5_pool(inp: R5Inputs) -> jax.Array:
    return r5_forward(inp)[0]


r5_pool.defvjp(r5_forward, r5_backward)


@jax.custom_vjp
def r5_pool_fused(inp: R5Inputs) -> jax.Array:
    return r5_forward(inp, fused=True)[0]


r5_pool_fused.defvjp(partial(r5_forward, fused=True), partial(r5_backward, fused=True))
POOLS = {"r5": r5_pool, "r5-autodiff": r5_pool_autodiff, "r5-fused": r5_pool_fused}


class TromptDownstream(nnx.Module):
    """The shared head: attention pooling over prompts, then a small MLP to one number."""

    def __init__(self, cfg: TromptConfig, rngs: nnx.Rngs) -> None:
        D = cfg.d_model
        self.dense0 = nnx.Linear(D, 1, rngs=rngs)
        self.dense1 = nnx.Linear(D, D, rngs=rngs)
        self.ln = make_layer_norm(D, rngs)
        self.dense_out = nnx.Linear(D, 1, rngs=rngs)

    def pool(self, cell_out: jax.Array) -> jax.Array:
        """(..., P, D) -> (..., D): softmax over prompts of dense0, weighted sum."""
        weights = jax.nn.softmax(self.dense0(cell_out), axis=-2)  # (..., P, 1)
        return (weights * cell_out).sum(axis=-2)

    def __call__(self, pooled: jax.Array) -> jax.Array:
        """(..., D) pooled vector -> (...) prediction."""
        return self.dense_out(self.ln(jax.nn.relu(self.dense1(pooled))))[..., 0]


class Trompt(nnx.Module):
    def __init__(self, cfg: TromptConfig, rngs: nnx.Rngs, transposed: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.prompt = nnx.Param(jnp.zeros((cfg.n_prompts, cfg.d_model)))

        @nnx.split_rngs(splits=cfg.n_cycles)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_cells(rngs: nnx.Rngs) -> TromptCell:
            return TromptCell(cfg, rngs, transposed)

        self.tcells = make_cells(rngs)  # every parameter has a leading axis of length N
        self.tdown = TromptDownstream(cfg, rngs)

    def masks(self) -> jax.Array:
        """(N, P, C) importance masks; every cell gets the model-level prompt (F1)."""
        cell_masks = nnx.vmap(lambda cell, prompt: cell.mask(prompt), in_axes=(0, None))
        return cell_masks(self.tcells, self.prompt[...])

    def __call__(self, x: jax.Array, variant: str = "r5") -> jax.Array:
        """x (B, C) -> predictions (B, N)."""
        v, v0 = self.tdown.dense0.kernel[...][:, 0], self.tdown.dense0.bias[...][0]  # r5's head (F5)
        if variant == "r5-fused":  # the kernels build each cell's mask from its Q and K
            prompt = self.prompt[...]
            pooled_r5 = nnx.vmap(lambda cell: cell.pooled_r5(x, None, v, v0, variant, prompt), in_axes=(0,))
            pooled = pooled_r5(self.tcells)  # (N, B, D)
        elif variant in POOLS:
            pooled_r5 = nnx.vmap(lambda cell, m: cell.pooled_r5(x, m, v, v0, variant), in_axes=(0, 0))
            pooled = pooled_r5(self.tcells, self.masks())  # (N, B, D)
        elif variant == "r3":
            pooled_r3 = nnx.vmap(lambda cell, m: cell.pooled_r3(x, m), in_axes=(0, 0))
            pooled = self.tdown.pool(pooled_r3(self.tcells, self.masks()))  # (N, B, P, D) -> (N, B, D)
        else:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        return self.tdown(pooled).T  # (N, B) -> (B, N)


def weighted_mse(pred: jax.Array, y: jax.Array, weight: jax.Array, n_rows: jax.Array) -> jax.Array:
    """Sum over rows and cycles of weight * (pred - y)^2, divided by n_rows * N.

    With all weights 1 and n_rows = B this is the original loss (mean over B * N). Rows of weight
    0 are padding: they let every batch (the short last batch of an epoch, a batch split over
    devices) run through one compiled shape and add exact zeros. Under data parallelism each
    device passes the GLOBAL n_rows, so the per-device losses simply add up.
    """
    squared = (pred - y[:, None]) ** 2  # (B, N)
    return (weight[:, None] * squared).sum() / (n_rows * pred.shape[1])


# ---------------------------------------------------------------------------------------------
# Canonical (torch-layout) numpy parameters <-> the NNX state of `Trompt`.

# canonical leaf name -> (path inside a cell or the head, whether torch stores it transposed)
_LEAF_TO_PATH = {
    "feature_emb_weight": (("feature_emb_weight",), False),
    "feature_emb_bias": (("feature_emb_bias",), False),
    "emb_column": (("emb_column",), False),
    "emb_prompt": (("emb_prompt",), False),
    "ln_emb.weight": (("ln_emb", "scale"), False),
    "ln_emb.bias": (("ln_emb", "bias"), False),
    "ln_col.weight": (("ln_col", "scale"), False),
    "ln_col.bias": (("ln_col", "bias"), False),
    "ln_prompt.weight": (("ln_prompt", "scale"), False),
    "ln_prompt.bias": (("ln_prompt", "bias"), False),
    "dense_imp.weight": (("dense_imp", "kernel"), True),
    "dense_imp.bias": (("dense_imp", "bias"), False),
    "dense_expand.weight": (("dense_expand", "kernel"), True),
    "dense_expand.bias": (("dense_expand", "bias"), False),
    "tdown.dense0.weight": (("dense0", "kernel"), True),
    "tdown.dense0.bias": (("dense0", "bias"), False),
    "tdown.dense1.weight": (("dense1", "kernel"), True),
    "tdown.dense1.bias": (("dense1", "bias"), False),
    "tdown.ln.weight": (("ln", "scale"), False),
    "tdown.ln.bias": (("ln", "bias"), False),
    "tdown.dense_out.weight": (("dense_out", "kernel"), True),
    "tdown.dense_out.bias": (("dense_out", "bias"), False),
}
assert set(CELL_PARAMS) <= set(_LEAF_TO_PATH)


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def to_pure_dict(params: dict[str, np.ndarray], cfg: TromptConfig, transposed: tuple[str, ...] = ()) -> dict:
    """Canonical numpy params -> the nested dict layout of `nnx.to_pure_dict(nnx.split(Trompt)[1])`
    (the cell parameters named in `transposed` stored (N, D, C), see TRANSPOSED)."""
    pure: dict = {"prompt": np.asarray(params["prompt"])}
    for leaf in CELL_PARAMS:
        path, flax_transposed = _LEAF_TO_PATH[leaf]
        stacked = np.stack([np.asarray(params[f"tcells.{n}.{leaf}"]) for n in range(cfg.n_cycles)])
        flip = flax_transposed or leaf in transposed
        _set(pure, ("tcells", *path), np.swapaxes(stacked, -1, -2) if flip else stacked)
    for name in (k for k in _LEAF_TO_PATH if k.startswith("tdown.")):
        path, transposed = _LEAF_TO_PATH[name]
        value = np.asarray(params[name])
        _set(pure, ("tdown", *path), value.T if transposed else value)
    return pure


def from_pure_dict(pure: dict, cfg: TromptConfig, transposed: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Inverse of `to_pure_dict` (works for gradients too); canonical names in canonical order."""
    out = {"prompt": np.asarray(pure["prompt"])}
    for n in range(cfg.n_cycles):
        for leaf in CELL_PARAMS:
            path, flax_transposed = _LEAF_TO_PATH[leaf]
            value = np.asarray(_get(pure["tcells"], path)[n])
            out[f"tcells.{n}.{leaf}"] = value.T if flax_transposed or leaf in transposed else value
    for name in (k for k in _LEAF_TO_PATH if k.startswith("tdown.")):
        path, transposed = _LEAF_TO_PATH[name]
        value = np.asarray(_get(pure["tdown"], path))
        out[name] = value.T if transposed else value
    return out


def build(params: dict[str, np.ndarray], cfg: TromptConfig, dtype: str,
          device: jax.Device | jax.sharding.Sharding | None = None, transposed: tuple[str, ...] = ()
          ) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, parameter state) of a Trompt holding `params`, placed on `device`.

    The model is traced abstractly (`nnx.eval_shape`), so Flax's own random init never runs:
    every backend starts from the same numpy numbers of `spec.init_params`.
    """
    abstract = nnx.eval_shape(lambda: Trompt(cfg, nnx.Rngs(0), transposed))
    graphdef, state = nnx.split(abstract)
    def place(a: np.ndarray) -> jax.Array:
        return jax.device_put(np.asarray(a, dtype=dtype), device)

    pure = jax.tree.map(place, to_pure_dict(params, cfg, transposed))
    nnx.replace_by_pure_dict(state, pure)
    return graphdef, state


def state_to_numpy(state: nnx.State, cfg: TromptConfig, transposed: tuple[str, ...] = ()
                   ) -> dict[str, np.ndarray]:
    """An NNX parameter state (or a gradient of one) -> canonical numpy dict."""
    return from_pure_dict(jax.device_get(nnx.to_pure_dict(state)), cfg, transposed)


def forward(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, variant: str = "r5") -> jax.Array:
    """Pure function of the split state (what gets jitted): predictions (B, N)."""
    return nnx.merge(graphdef, state)(x, variant)


def loss_fn(state: nnx.State, graphdef: nnx.GraphDef, x: jax.Array, y: jax.Array, weight: jax.Array,
            n_rows: jax.Array, variant: str = "r5") -> jax.Array:
    return weighted_mse(forward(graphdef, state, x, variant), y, weight, n_rows)
