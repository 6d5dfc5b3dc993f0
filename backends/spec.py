"""The one shared specification of the modified Trompt: shapes, names, init, protocol, AdamW.

Every backend (and the reference) reads its sizes and hyper-parameters from here, so that no
number is hand-copied between frameworks. Pure numpy: importing this never imports a framework.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------------
# Training protocol of the original script (docs/SPEC.md §5-6).
BATCH_SIZE = 8
VAL_BATCH_SIZE = 1024
EPOCHS = 5
LR = 3e-4
WEIGHT_DECAY = 1e-5
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
LN_EPS = 1e-5
SEED = 0
# ---------------------------------------------------------------------------------------------

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class TromptConfig:
    """Model shape. The defaults are the original's: C=984 columns, P=128 prompts, D=128, N=6."""

    n_columns: int = 984
    n_prompts: int = 128
    d_model: int = 128
    n_cycles: int = 6

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TromptConfig.{field.name} must be a positive int, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# Per-cell parameters in the order the original module registers them (matters for checkpoints
# and for the order in which an optimizer walks the state).
CELL_PARAMS = (
    "feature_emb_weight",
    "feature_emb_bias",
    "emb_column",
    "emb_prompt",
    "ln_emb.weight",
    "ln_emb.bias",
    "ln_col.weight",
    "ln_col.bias",
    "ln_prompt.weight",
    "ln_prompt.bias",
    "dense_imp.weight",
    "dense_imp.bias",
    "dense_expand.weight",
    "dense_expand.bias",
)
HEAD_PARAMS = (
    "tdown.dense0.weight",
    "tdown.dense0.bias",
    "tdown.dense1.weight",
    "tdown.dense1.bias",
    "tdown.ln.weight",
    "tdown.ln.bias",
    "tdown.dense_out.weight",
    "tdown.dense_out.bias",
)


def param_shapes(cfg: TromptConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape, in the original's enumeration order (torch layouts: Linear is (out, in))."""
    C, P, D = cfg.n_columns, cfg.n_prompts, cfg.d_model
    cell = {
        "feature_emb_weight": (C, D),
        "feature_emb_bias": (C, D),
        "emb_column": (C, D),
        "emb_prompt": (P, D),
        "ln_emb.weight": (D,),
        "ln_emb.bias": (D,),
        "ln_col.weight": (D,),
        "ln_col.bias": (D,),
        "ln_prompt.weight": (D,),
        "ln_prompt.bias": (D,),
        "dense_imp.weight": (D, 2 * D),
        "dense_imp.bias": (D,),
        "dense_expand.weight": (P, 1),
        "dense_expand.bias": (P,),
    }
    shapes: dict[str, tuple[int, ...]] = {"prompt": (P, D)}
    for n in range(cfg.n_cycles):
        for name in CELL_PARAMS:
            shapes[f"tcells.{n}.{name}"] = cell[name]
    shapes.update(
        {
            "tdown.dense0.weight": (1, D),
            "tdown.dense0.bias": (1,),
            "tdown.dense1.weight": (D, D),
            "tdown.dense1.bias": (D,),
            "tdown.ln.weight": (D,),
            "tdown.ln.bias": (D,),
            "tdown.dense_out.weight": (1, D),
            "tdown.dense_out.bias": (1,),
        }
    )
    return shapes


def param_names(cfg: TromptConfig) -> list[str]:
    return list(param_shapes(cfg))


# Parameter layout shared by the backends that batch the cells: canonical per-cell names <-> one
# stacked (N, ...) array per per-cell leaf name.


def stack_cells(params: dict[str, np.ndarray], cfg: TromptConfig) -> dict[str, np.ndarray]:
    """{"tcells.3.emb_column": (C, D), ...} -> {"emb_column": (N, C, D), ...}; shared ones unchanged."""
    stacked = {leaf: np.stack([params[f"tcells.{n}.{leaf}"] for n in range(cfg.n_cycles)])
               for leaf in CELL_PARAMS}
    stacked["prompt"] = params["prompt"]
    stacked.update({name: params[name] for name in HEAD_PARAMS})
    return stacked


def unstack_cells(stacked: dict[str, np.ndarray], cfg: TromptConfig) -> dict[str, np.ndarray]:
    """Inverse of `stack_cells`, in the canonical (original's) order."""
    params = {"prompt": stacked["prompt"]}
    for n in range(cfg.n_cycles):
        for leaf in CELL_PARAMS:
            params[f"tcells.{n}.{leaf}"] = stacked[leaf][n]
    params.update({name: stacked[name] for name in HEAD_PARAMS})
    return params


def dead_params(cfg: TromptConfig) -> list[str]:
    """Parameters with an identically zero gradient (docs/SPEC.md §4, F7): each only adds a constant
    along the softmax axis it feeds. Their float gradients are rounding noise, so checks skip them."""
    return [f"tcells.{n}.ln_col.bias" for n in range(cfg.n_cycles)] + ["tdown.dense0.bias"]


def n_params(cfg: TromptConfig) -> int:
    return int(sum(np.prod(s) for s in param_shapes(cfg).values()))


def init_params(cfg: TromptConfig, seed: int = SEED, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The original's initialisations (PyTorch defaults), drawn with numpy so every backend starts
    from the very same numbers. PyTorch's own RNG stream is not reproduced: no backend needs it."""
    check_dtype(dtype)
    rng = np.random.default_rng(seed)
    D, P = cfg.d_model, cfg.n_prompts

    def uniform(shape: tuple[int, ...], bound: float) -> np.ndarray:
        return rng.uniform(-bound, bound, size=shape)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return rng.normal(0.0, std, size=shape)

    params: dict[str, np.ndarray] = {}
    for name, shape in param_shapes(cfg).items():
        leaf = name.split(".", 2)[-1] if name.startswith("tcells.") else name
        if leaf in ("feature_emb_weight", "feature_emb_bias"):
            value = uniform(shape, 1 / np.sqrt(D))
        elif leaf in ("emb_column", "emb_prompt", "prompt"):
            value = normal(shape, 0.01)
        elif leaf.endswith("ln.weight") or leaf.startswith("ln_") and leaf.endswith(".weight"):
            value = np.ones(shape)
        elif leaf.endswith("ln.bias") or leaf.startswith("ln_") and leaf.endswith(".bias"):
            value = np.zeros(shape)
        elif leaf.startswith("dense_imp."):
            value = uniform(shape, 1 / np.sqrt(2 * D))  # nn.Linear: ±1/sqrt(fan_in), fan_in = 2D
        elif leaf.startswith("dense_expand."):
            value = uniform(shape, 1.0)  # fan_in = 1
        elif leaf.startswith("tdown.dense"):
            value = uniform(shape, 1 / np.sqrt(D))
        else:  # pragma: no cover - every name above is covered; a new one must be added here
            raise AssertionError(f"no initialisation rule for {name}")
        params[name] = value.astype(dtype)
    assert P == params["prompt"].shape[0]
    return params


# ---------------------------------------------------------------------------------------------
# Validation shared by every backend: one-line ValueErrors that name the problem.


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def check_params(params: dict, cfg: TromptConfig) -> None:
    shapes = param_shapes(cfg)
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict keyed by canonical names, got {type(params).__name__}")
    missing = [k for k in shapes if k not in params]
    extra = [str(k) for k in params if k not in shapes]
    if missing:
        raise ValueError(f"missing parameters: {_first_few(missing)}")
    if extra:
        raise ValueError(f"unknown parameters: {_first_few(extra)}")
    for name, shape in shapes.items():
        got = tuple(np.shape(params[name]))
        if got != shape:
            raise ValueError(f"parameter {name} has shape {got}, expected {shape}")


def _first_few(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f" ... ({len(names)} in all)" if len(names) > k else "")


def check_x(x: np.ndarray, cfg: TromptConfig) -> None:
    shape = np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"x must be 2-D (batch, {cfg.n_columns}), got shape {shape}")
    if shape[1] != cfg.n_columns:
        raise ValueError(f"x has {shape[1]} columns, the config expects n_columns={cfg.n_columns}")
    if shape[0] < 1:
        raise ValueError("x has no rows")


def check_y(y: np.ndarray, x: np.ndarray) -> None:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (batch,), got shape {y.shape}")
    if y.shape[0] != np.shape(x)[0]:
        raise ValueError(f"y has {y.shape[0]} rows but x has {np.shape(x)[0]}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or inf")


# ---------------------------------------------------------------------------------------------
# AdamW with torch.optim.AdamW's semantics, in numpy: the yardstick every backend's optimizer is
# checked against (and the optimizer of backends whose framework has no trustworthy AdamW).


def adamw_update(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: int,
    lr: float = LR,
    weight_decay: float = WEIGHT_DECAY,
    betas: tuple[float, float] = BETAS,
    eps: float = ADAM_EPS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One AdamW step (step counts from 1); returns new (param, m, v)."""
    beta1, beta2 = betas
    param = param * (1 - lr * weight_decay)  # decoupled decay uses the pre-update parameter
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    denom = np.sqrt(v) / np.sqrt(bias2) + eps  # torch puts eps outside the square root
    return param - (lr / bias1) * m / denom, m, v
