"""pytorch-frame's Trompt (`torch_frame.nn.models.Trompt`) trained like ours, for timing only.

What a user who installs pytorch-frame gets: its Trompt with the hyper-parameters closest to our
model's (channels = d_model, num_prompts = n_prompts, num_layers = n_cycles, out_channels = 1) and
its default encoders, fed a TensorFrame of our float matrix with every column numerical. For
numerical columns the default is torch_frame's LinearEncoder, which standardises each column with
the mean and standard deviation torch_frame's `compute_col_stats` gives (what
`Dataset.materialize()` would compute), then applies ReLU and LayerNorm.

The training step is ours as far as it applies: the model returns one prediction per layer, as
ours returns one per cycle, and the loss averages the squared error of all of them over B x N
(`reference.model.mse_over_cycles`); one torch.optim.AdamW over every parameter with the lr, betas,
eps and weight decay of backends/spec.py; the same batches (bench.timing's stream).

It is a different model (docs/SPEC.md §12): its result records `equivalence` as DIFFERENCES,
never a verdict of `bench check`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torch_frame
from torch_frame import TensorFrame, stype
from torch_frame.data.stats import StatType
from torch_frame.nn.models import Trompt

from backends import spec
from backends.base import check_rows, cpu_name
from backends.spec import TromptConfig
from backends.torch.device import OP_TIME_BASIS, default_threads, profile_ops

# What the result JSON says instead of an equivalence verdict (docs/SPEC.md §12 has the details).
DIFFERENCES = ("not the same model: pytorch-frame's Trompt chains the prompts from layer to layer, "
               "standardises each column, and expands with ReLU + GroupNorm")
GROUPS = 2  # TromptConv's GroupNorm over the prompts: torch_frame's default num_groups


class PytorchFramePeer:
    """The peer's counterpart of a Backend: what `bench.timing.time_training` asks of one."""

    name = "pytorch-frame"
    differences = DIFFERENCES
    devices = ("cpu",)
    dtypes = ("float32",)

    def __init__(self, device: str = "cpu", dtype: str = "float32", seed: int = spec.SEED) -> None:
        spec.check_dtype(dtype)
        if device not in self.devices:
            raise ValueError(f"the pytorch-frame peer runs on the CPU only, not on {device!r}")
        if dtype not in self.dtypes:
            raise ValueError(f"the pytorch-frame peer runs in float32 only, not in {dtype}")
        self.device, self.dtype, self.seed = device, dtype, seed

    @property
    def title(self) -> str:
        """What a result's "peer" field says: the library and its version."""
        return f"pytorch-frame Trompt {torch_frame.__version__}"

    def parse_options(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        if given:
            raise ValueError(f"the pytorch-frame peer takes no options, got {', '.join(map(str, given))}")
        return {}

    def inexact_options(self, options: dict[str, Any]) -> list[str]:
        del options  # none exist; the whole model differs, which `equivalence` says
        return []

    def device_name(self) -> str:
        return cpu_name()

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "torch_frame": torch_frame.__version__, "pandas": pd.__version__,
                "threads": str(torch.get_num_threads())}

    def trainer(self, params: dict[str, np.ndarray] | None, cfg: TromptConfig, x_train: np.ndarray,
                y_train: np.ndarray, lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                **options: Any) -> PytorchFrameTrainer:
        """A trainer over the whole training set. `params` (our model's initial values, what
        time_training passes to every backend) do not fit this other model and are ignored: it
        draws its own with torch_frame's `reset_parameters`, from the peer's seed."""
        del params
        self.parse_options(options)
        spec.check_x(x_train, cfg)
        spec.check_y(y_train, x_train)
        return PytorchFrameTrainer(cfg, x_train, y_train, lr, weight_decay, self.seed)


# ---------------------------------------------------------------------------------------------
# The model and its input


def column_names(n_columns: int) -> list[str]:
    return [f"x{c}" for c in range(n_columns)]


def column_stats(x: np.ndarray, names: list[str]) -> dict[str, dict[StatType, Any]]:
    """The statistics torch_frame's encoders read from each numerical column: the mean and the
    standard deviation (n denominator) of its finite values, computed as torch_frame's
    `compute_col_stats` computes them (the tests compare the two). That function also takes the
    quantiles, which no encoder here reads, and walks each column element by element in Python
    (tens of seconds for synthetic:small's 984 columns), so it is not called here."""
    stats = {}
    for c, name in enumerate(names):
        column = x[:, c]
        finite = column[np.isfinite(column)]
        stats[name] = ({StatType.MEAN: np.mean(finite).item(), StatType.STD: np.std(finite).item()}
                       if len(finite) else {StatType.MEAN: np.nan, StatType.STD: np.nan})
    return stats


def build_model(cfg: TromptConfig, stats: dict[str, dict[StatType, Any]], names: list[str]) -> Trompt:
    """pytorch-frame's Trompt with our sizes and its default encoders."""
    if cfg.n_prompts % GROUPS:
        raise ValueError(f"pytorch-frame's Trompt needs n_prompts divisible by {GROUPS} (its GroupNorm "
                         f"has {GROUPS} groups), got {cfg.n_prompts}")
    return Trompt(channels=cfg.d_model, out_channels=1, num_prompts=cfg.n_prompts, num_layers=cfg.n_cycles,
                  col_stats=stats, col_names_dict={stype.numerical: names})


def parameter_shapes(cfg: TromptConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of the peer model with our sizes, by its torch name. The shapes do not
    depend on the column statistics, so placeholder ones serve."""
    names = column_names(cfg.n_columns)
    placeholder = {StatType.MEAN: 0.0, StatType.STD: 1.0}
    model = build_model(cfg, dict.fromkeys(names, placeholder), names)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def layerwise_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """pred (B, N, 1), one prediction per layer; the same target for each; mean over B x N."""
    pred = pred.squeeze(-1)
    return F.mse_loss(pred, y.unsqueeze(1).expand_as(pred))


# ---------------------------------------------------------------------------------------------
# The trainer


class PytorchFrameTrainer:
    """The peer model, its AdamW and the training set (a TensorFrame) in memory; `run` takes
    batches of row indices, like our trainers."""

    def __init__(self, cfg: TromptConfig, x_train: np.ndarray, y_train: np.ndarray, lr: float,
                 weight_decay: float, seed: int) -> None:
        torch.set_num_threads(default_threads())  # the threads our torch backend uses by default
        torch.manual_seed(seed)  # torch_frame draws the initial values from torch's generator
        names = column_names(cfg.n_columns)
        x = np.ascontiguousarray(x_train, dtype=np.float32)
        self.frame = TensorFrame({stype.numerical: torch.from_numpy(x.copy())}, {stype.numerical: names})
        self.y = torch.from_numpy(np.asarray(y_train, dtype=np.float32).copy())
        self.model = build_model(cfg, column_stats(x, names), names)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=spec.BETAS,
                                           eps=spec.ADAM_EPS, weight_decay=weight_decay)
        self.n_train = len(x)
        self._losses: list[torch.Tensor] = []

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def loss(self, rows: np.ndarray) -> torch.Tensor:
        index = torch.from_numpy(check_rows(rows, self.n_train))
        return layerwise_mse(self.model(self.frame[index]), self.y[index])

    # -- the timing interface of backends.base.Trainer ------------------------------------------
    def run(self, batches: list[np.ndarray]) -> None:
        """One AdamW step per batch of row indices."""
        for rows in batches:
            loss = self.loss(rows)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._losses.append(loss.detach())

    def sync(self) -> None:
        """Nothing to wait for: torch runs CPU work before returning."""

    def losses(self) -> list[float]:
        return [float(loss) for loss in self._losses]

    def gradients(self, rows: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and the gradient of every parameter (by its torch name) on `rows`, without a step
        (the warm-up runs it on the epoch's short last batch)."""
        loss = self.loss(rows)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = {name: p.grad.numpy().copy() for name, p in self.model.named_parameters()}
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    def samples_per_step(self, batch: np.ndarray) -> int:
        return len(batch)

    def min_warmup_steps(self) -> int:
        return 1

    def timed_steps_multiple(self) -> int:
        return 1

    op_time_basis = OP_TIME_BASIS

    def op_times(self, batches: Sequence[np.ndarray]) -> list[tuple[str, float, int]]:
        """torch.profiler's self time per op, as the torch backend's."""
        return profile_ops(self, batches, "cpu")

    def agree_max(self, value: float) -> float:
        return value  # one process

    def peak_memory_mb(self) -> float | None:
        return None  # bench measures the process's host memory

    def run_notes(self) -> dict[str, Any]:
        return {}  # nothing happens inside its steps that their times do not show
