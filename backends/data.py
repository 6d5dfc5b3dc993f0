"""One data pipeline for every backend: load or synthesise, clean like the original, numpy out.

Sources (`load_dataset(source)`):
  synthetic:tiny | synthetic:small | synthetic:full   generated here, deterministic from a seed
  DIR holding train.pt and val.pt                      the original format: a tuple (X, Y) of tensors
  DIR holding train.npz and val.npz                    arrays named X and Y

Cleaning is the original script's: nan_to_num on X and Y of both splits, no feature scaling, the
training target standardised with the training mean and std (n - 1). Validation targets stay raw.
The batch order (`epoch_batches`) is a pure function of (seed, epoch), so every backend sees the
same batches in the same order.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N_COLUMNS = 984

# name -> (train rows, validation rows). n_train is deliberately not a multiple of 8 so the last,
# partial batch of every epoch is exercised.
PRESETS = {
    "tiny": (1_029, 256),
    "small": (4_003, 1_024),
    "full": (160_003, 90_000),
}


class DataError(ValueError):
    """A dataset that cannot be used; the message is one line naming the problem."""


@dataclass
class Dataset:
    x_train: np.ndarray  # (n_train, C) float32, cleaned, unscaled
    y_train: np.ndarray  # (n_train,) standardised with the training statistics
    x_val: np.ndarray  # (n_val, C) float32
    y_val: np.ndarray  # (n_val,) raw (cleaned) targets
    y_mean: float
    y_std: float
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_columns(self) -> int:
        return self.x_train.shape[1]

    def destandardise(self, pred: np.ndarray) -> np.ndarray:
        return pred * self.y_std + self.y_mean


def epoch_batches(n_train: int, batch_size: int, epoch: int, seed: int = 0) -> list[np.ndarray]:
    """The shuffled index batches of one epoch (uniform permutation, last partial batch kept)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    order = np.random.default_rng([seed, epoch]).permutation(n_train)
    return [order[i:i + batch_size] for i in range(0, n_train, batch_size)]


def validation_mae(pred_std: np.ndarray, data: Dataset) -> float:
    """The original metric: mean over cycles, de-standardise with TRAIN stats, MAE in raw units."""
    pred = data.destandardise(np.asarray(pred_std, dtype=np.float64).mean(axis=1))
    return float(np.abs(pred - data.y_val).sum() / len(data.y_val))


# ---------------------------------------------------------------------------------------------
# Loading


def load_dataset(source: str = "synthetic:small", seed: int = 0, n_columns: int = N_COLUMNS) -> Dataset:
    """Load `source` (see module docstring) and clean it; `n_columns` applies to synthetic data."""
    if source.startswith("synthetic:"):
        preset = source.split(":", 1)[1]
        if preset not in PRESETS:
            raise DataError(f"unknown synthetic preset {preset!r}; choose one of {', '.join(PRESETS)}")
        n_train, n_val = PRESETS[preset]
        x_tr, y_tr, x_va, y_va = make_synthetic(n_train, n_val, n_columns=n_columns, seed=seed)
        return clean(x_tr, y_tr, x_va, y_va, source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"data path {source} does not exist (expected a directory or synthetic:PRESET)")
    if not path.is_dir():
        raise DataError(f"data path {source} is not a directory holding train.pt/val.pt or train.npz/val.npz")
    notes: list[str] = []
    for ext, reader in ((".pt", _read_pt), (".npz", _read_npz)):
        train, val = path / f"train{ext}", path / f"val{ext}"
        if train.exists() or val.exists():
            for f in (train, val):
                if not f.exists():
                    raise DataError(f"{f} is missing (both train{ext} and val{ext} are needed)")
            x_tr, y_tr = _check_split(*reader(train), train, notes)
            x_va, y_va = _check_split(*reader(val), val, notes)
            if x_tr.shape[1] != x_va.shape[1]:
                raise DataError(f"train has {x_tr.shape[1]} columns but val has {x_va.shape[1]}")
            return clean(x_tr, y_tr, x_va, y_va, str(path), notes)
    raise DataError(f"{source} holds neither train.pt/val.pt nor train.npz/val.npz")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:  # object arrays would need pickle: refused
            if "X" not in f or "Y" not in f:
                raise DataError(f"{path} must hold arrays named X and Y, found {sorted(f.files)}")
            return f["X"], f["Y"]
    except DataError:
        raise
    except ValueError as e:
        raise DataError(f"{path}: refused ({str(e).splitlines()[0]})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__})") from None


def _read_pt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise DataError(f"reading {path.name} needs torch: pip install -e '.[torch]'") from None
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    try:
        # weights_only=True: the restricted unpickler that builds tensors and containers only and
        # refuses any other global (code is never run).
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types here; all mean "unusable file"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DataError(f"{path} could not be loaded safely: {first}") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataError(f"{path} must hold a tuple (X, Y), got {type(obj).__name__}"
                        + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""))
    arrays = []
    for name, t in zip(("X", "Y"), obj):
        if not isinstance(t, torch.Tensor):
            raise DataError(f"{path}: {name} is a {type(t).__name__}, expected a tensor")
        t = t.detach().cpu()
        arrays.append((t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy())
    return arrays[0], arrays[1]


def _check_split(x: np.ndarray, y: np.ndarray, path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 2:
        raise DataError(f"{path}: X must be 2-D (rows, columns), got shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{path}: Y must be 1-D (rows,), got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: X has {x.shape[0]} rows but Y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise DataError(f"{path}: no rows")
    for name, a in (("X", x), ("Y", y)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise DataError(f"{path}: {name} has dtype {a.dtype}, expected numbers")
    for name, a in (("X", x), ("Y", y)):
        if np.issubdtype(a.dtype, np.floating) and np.isinf(a).any():
            where = np.argwhere(np.isinf(a))[0]
            at = f"row {where[0]}, column {where[1]}" if a.ndim == 2 else f"row {where[0]}"
            count = int(np.isinf(a).sum())
            raise DataError(f"{path}: {name} holds {a[tuple(where)]} at {at} ({count} in all); "
                            "the original's nan_to_num would turn it into the largest float, which "
                            "overflows the model: remove or clip it")
    if x.dtype != np.float32:
        notes.append(f"{path.name}: X converted from {x.dtype} to float32 (the model runs on float32 input)")
        x = x.astype(np.float32)
    all_nan = int(np.isnan(x).all(axis=0).sum())
    if all_nan:
        notes.append(f"{path.name}: {all_nan} all-NaN column(s) kept (they become zeros)")
    n_nan_y = int(np.isnan(y).sum()) if np.issubdtype(y.dtype, np.floating) else 0
    if n_nan_y:
        notes.append(f"{path.name}: {n_nan_y} NaN target(s) set to 0 by nan_to_num, as the original does")
    return x, y.astype(np.float32)


def clean(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
          source: str, notes: list[str] | None = None) -> Dataset:
    """The original preprocessing: nan_to_num everywhere, standardise the training target only."""
    x_train, y_train, x_val, y_val = (np.nan_to_num(a) for a in (x_train, y_train, x_val, y_val))
    if len(y_train) < 2:
        raise DataError("the training split needs at least 2 rows to standardise the target")
    y_mean = float(np.mean(y_train, dtype=np.float64))
    y_std = float(np.std(y_train, ddof=1, dtype=np.float64))
    if not np.isfinite(y_std) or y_std == 0:
        raise DataError(f"the training target has standard deviation {y_std}; it cannot be standardised")
    y_train_std = ((y_train.astype(np.float64) - y_mean) / y_std).astype(np.float32)
    for name, a in (("train X", x_train), ("val X", x_val), ("train Y", y_train_std), ("val Y", y_val)):
        if not np.all(np.isfinite(a)):
            raise DataError(f"{name} still holds non-finite values after cleaning")
    return Dataset(x_train, y_train_std, x_val, y_val, y_mean, y_std, source, notes or [])


# ---------------------------------------------------------------------------------------------
# Synthetic data of the original's shape that really learns (docs/SPEC.md §5).

N_LATENT = 16
TARGET_MEAN, TARGET_STD, BAYES_R2 = 4.5, 0.38, 0.8
ROWS_PER_CHUNK = 1_024


def _column_plan(n_columns: int, seed: int) -> dict[str, np.ndarray]:
    """Per-column family, scale, loadings and missingness, fixed by the seed."""
    rng = np.random.default_rng([seed, 1])
    n = n_columns
    family = rng.choice(5, size=n, p=[0.55, 0.20, 0.10, 0.07, 0.08])  # lognormal/count/ratio/bin/signed
    loadings = np.zeros((N_LATENT, n))
    for c in range(n):  # each column reads 1-3 latent coordinates: blocks of correlated columns
        k = rng.integers(1, 4)
        loadings[rng.choice(N_LATENT, size=k, replace=False), c] = rng.normal(size=k)
    loadings /= np.linalg.norm(loadings, axis=0, keepdims=True)
    kind = rng.random(n)
    # ~80% complete columns, ~13% with 1-20% missing, ~7% with 30-70% (`python docs/facts.py`
    # prints the resulting share of missing cells).
    missing_rate = np.where(kind < 0.8, 0.0, np.where(kind < 0.93, rng.uniform(0.01, 0.2, n),
                                                      rng.uniform(0.3, 0.7, n)))
    duplicate_of = np.full(n, -1)
    if n >= 40:  # feature-engineered redundancy: some exact duplicates and constant columns
        dup = rng.choice(np.arange(3, n), size=n // 100 + 1, replace=False)
        duplicate_of[dup] = rng.integers(3, n, size=dup.size)
        duplicate_of[duplicate_of == np.arange(n)] = -1
    constant = np.zeros(n, bool)
    if n >= 40:
        constant[rng.choice(np.arange(3, n), size=n // 120 + 1, replace=False)] = True
    return {
        "family": family,
        "loadings": loadings,
        "scale": 10 ** rng.uniform(-2, 3, n),
        "rate": np.exp(rng.uniform(np.log(0.1), np.log(50), n)),
        "offset": rng.normal(0, 5, n),
        "threshold": rng.normal(0, 0.7, n),
        "missing_rate": missing_rate,
        "missing_block": rng.integers(0, 24, n),  # columns of a block go missing together
        "duplicate_of": duplicate_of,
        "constant": constant,
    }


def _target_signal(z: np.ndarray, minute: np.ndarray) -> np.ndarray:
    """A smooth non-linear function of a few latents, a daily rhythm and two interactions."""
    daily = np.sin(2 * np.pi * minute / 1440) + 0.5 * np.cos(4 * np.pi * minute / 1440)
    return (np.sin(1.5 * z[:, 0]) + 0.8 * np.tanh(z[:, 1] * z[:, 2]) + 0.5 * z[:, 3] ** 2
            - 0.7 * np.abs(z[:, 4]) + 0.6 * daily + 0.4 * z[:, 5] * (minute > 720))


def _signal_moments() -> tuple[float, float]:
    """Mean and std of the signal under the training distribution: one scale for both splits."""
    rng = np.random.default_rng(12345)
    s = _target_signal(rng.normal(size=(200_000, N_LATENT)), rng.integers(0, 1440, 200_000))
    return float(s.mean()), float(s.std())


def _make_rows(n_rows: int, plan: dict[str, np.ndarray], rng: np.random.Generator, drift: float,
               moments: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    n_cols = plan["family"].size
    z = rng.normal(size=(n_rows, N_LATENT)) + drift
    minute = rng.integers(0, 1440, n_rows)
    day = rng.integers(0, 7, n_rows)
    s = z @ plan["loadings"] + 0.3 * rng.normal(size=(n_rows, n_cols))  # (n, C)
    fam = plan["family"]
    x = np.empty((n_rows, n_cols))
    lognormal, count, ratio, binary, signed = (fam == k for k in range(5))
    x[:, lognormal] = np.exp(0.8 * s[:, lognormal]) * plan["scale"][lognormal]
    x[:, count] = rng.poisson(plan["rate"][count] * np.exp(0.5 * s[:, count]))
    x[:, ratio] = 1 / (1 + np.exp(-2 * s[:, ratio]))
    x[:, binary] = s[:, binary] > plan["threshold"][binary]
    x[:, signed] = s[:, signed] * plan["scale"][signed] ** 0.5 + plan["offset"][signed]
    if n_cols >= 3:  # time columns, deliberately on large raw scales like the real data
        x[:, 0], x[:, 1], x[:, 2] = day, minute // 60, minute
    dup = plan["duplicate_of"] >= 0
    x[:, dup] = x[:, plan["duplicate_of"][dup]]
    x[:, plan["constant"]] = 1.0
    # Missingness: one uniform per (row, block) so columns of a block go missing together.
    u = rng.random((n_rows, 24))[:, plan["missing_block"]]
    x[u < plan["missing_rate"]] = np.nan
    signal = (_target_signal(z, minute) - moments[0]) / moments[1]
    noise = rng.normal(size=n_rows)
    y = TARGET_MEAN + TARGET_STD * (np.sqrt(BAYES_R2) * signal + np.sqrt(1 - BAYES_R2) * noise)
    return x.astype(np.float32), y.astype(np.float32)


def make_synthetic(n_train: int, n_val: int, n_columns: int = N_COLUMNS,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw (uncleaned, NaN-holding) X, Y for both splits, made in seeded chunks of rows: row i of a
    split depends only on (seed, split, i), not on the sizes asked for."""
    plan = _column_plan(n_columns, seed)
    moments = _signal_moments()
    out = []
    for split, n_rows, drift in ((0, n_train, 0.0), (1, n_val, 0.05)):  # slight drift, like a later week
        xs, ys = [], []
        for chunk, start in enumerate(range(0, n_rows, ROWS_PER_CHUNK)):
            rng = np.random.default_rng([seed, 2, split, chunk])
            # Always a whole chunk (then cut), so row i is the same whatever the split's size.
            x, y = _make_rows(ROWS_PER_CHUNK, plan, rng, drift, moments)
            xs.append(x[:n_rows - start])
            ys.append(y[:n_rows - start])
        out += [np.concatenate(xs), np.concatenate(ys)]
    return out[0], out[1], out[2], out[3]
