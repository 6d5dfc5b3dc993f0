"""The contract every backend implements, written once (like MiniTorch's TensorOps).

Checking surface (numpy in, numpy out; slow is fine, it is what `bench check` compares):

    b.forward(params, x, cfg)          -> np.ndarray (B, cfg.n_cycles)
    b.loss_and_grad(params, x, y, cfg) -> (float, {name: np.ndarray})   # MSE over B * n_cycles
    b.train_steps(params, batches, cfg, lr, weight_decay) -> ({name: np.ndarray}, [float])

Speed surface (what `bench` times): `b.trainer(params, cfg, x_train, y_train, ...)` returns a
`Trainer` that keeps parameters, optimizer state and the whole training set on the device and
takes index batches, so a step moves nothing but a few indices to the device.

A backend subclasses `Backend` and implements the underscored methods; the public ones validate
their inputs first, so every framework rejects bad input with the same one-line ValueError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends import spec
from backends.spec import TromptConfig


class Trainer:
    """AdamW training state resident on one backend's device.

    This default keeps everything in numpy and calls `Backend.train_steps` per batch: correct
    but slow. Fast backends override it with a device-resident version.
    """

    def __init__(self, backend: Backend, params: dict[str, np.ndarray], cfg: TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float = spec.LR,
                 weight_decay: float = spec.WEIGHT_DECAY, **options: Any) -> None:
        if options:
            raise ValueError(f"backend {backend.name!r} takes no trainer options, got {sorted(options)}")
        self.backend, self.cfg, self.lr, self.weight_decay = backend, cfg, lr, weight_decay
        self.x_train, self.y_train = x_train, y_train
        self._params = {k: np.array(v, dtype=backend.dtype) for k, v in params.items()}
        self._state: dict = {}
        self._losses: list[float] = []

    def step(self, idx: np.ndarray) -> None:
        """One optimizer step on the training rows `idx` (a batch of indices)."""
        batch = [(self.x_train[idx], self.y_train[idx])]
        self._params, losses = self.backend.train_steps(
            self._params, batch, self.cfg, self.lr, self.weight_decay, state=self._state)
        self._losses += losses

    def run(self, batches: list[np.ndarray]) -> None:
        """Several steps; a backend may fuse them into one dispatch."""
        for idx in batches:
            self.step(idx)

    def sync(self) -> None:
        """Block until all queued device work is done (timers stop only after this)."""

    def losses(self) -> list[float]:
        """Every step's training loss since the start (reading them back may synchronise)."""
        return list(self._losses)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(B, n_cycles) predictions with the current parameters."""
        return self.backend.forward(self._params, x, self.cfg)

    def params(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self._params.items()}

    def peak_memory_mb(self) -> float | None:
        """Peak device memory if the framework reports it (host memory is measured by bench)."""
        return None

    def agree_max(self, value: float) -> float:
        """The largest `value` over the processes of a multi-process run (itself when alone):
        every rank must run the same number of steps, or a collective waits for a finished peer."""
        return value

    # -- checkpointing: everything needed to continue bit-for-bit, as numpy arrays -------------
    # Keys: "param/<name>", "exp_avg/<name>", "exp_avg_sq/<name>" (canonical names) and "step".
    def state(self) -> dict[str, np.ndarray]:
        out = {f"param/{k}": np.array(v) for k, v in self._params.items()}
        for k in self._params:
            for moment, key in (("exp_avg", "m"), ("exp_avg_sq", "v")):
                out[f"{moment}/{k}"] = np.array(self._state.get((key, k), np.zeros_like(self._params[k])))
        out["step"] = np.array(self._state.get("step", 0), dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, self.cfg)
        self._params = {k: np.array(state[f"param/{k}"], dtype=self.backend.dtype) for k in self._params}
        self._state = {"step": int(state["step"])}
        for k in self._params:
            self._state[("m", k)] = np.array(state[f"exp_avg/{k}"], dtype=self.backend.dtype)
            self._state[("v", k)] = np.array(state[f"exp_avg_sq/{k}"], dtype=self.backend.dtype)


def batches_as_rows(batches: list, cfg: TromptConfig) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Validate (x, y) batches and lay them end to end: (x_all, y_all, each batch's row indices),
    so that `train_steps` can replay them through a device-resident trainer as index batches."""
    for x, y in batches:
        spec.check_x(x, cfg)
        spec.check_y(y, x)
    if not batches:
        return np.zeros((0, cfg.n_columns)), np.zeros(0), []
    ends = np.cumsum([len(x) for x, _ in batches])
    rows = [np.arange(end - len(x), end) for end, (x, _) in zip(ends, batches)]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]), rows


def check_state(state: dict[str, np.ndarray], cfg: TromptConfig) -> None:
    """A trainer state must hold every parameter and both moments with the right shapes."""
    for name, shape in spec.param_shapes(cfg).items():
        for prefix in ("param", "exp_avg", "exp_avg_sq"):
            key = f"{prefix}/{name}"
            if key not in state:
                raise ValueError(f"trainer state lacks {key}")
            if tuple(np.shape(state[key])) != shape:
                raise ValueError(f"trainer state {key} has shape {np.shape(state[key])}, expected {shape}")
    if "step" not in state or np.ndim(state["step"]) != 0:
        raise ValueError("trainer state lacks the scalar 'step'")


class Backend:
    """Base class: input validation around the framework-specific `_forward` and `_loss_and_grad`."""

    name = "base"
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = spec.DTYPES
    trainer_class: type[Trainer] = Trainer

    def __init__(self, device: str = "cpu", dtype: str = "float32") -> None:
        spec.check_dtype(dtype)
        if device not in self.devices:
            raise ValueError(f"unknown device {device!r} for backend {self.name!r}; "
                             f"choose one of {', '.join(self.devices)}")
        if dtype not in self.dtypes:
            raise ValueError(f"backend {self.name!r} does not support {dtype} "
                             f"(supported: {', '.join(self.dtypes)})")
        self.device, self.dtype = device, dtype
        self._check_device_present()

    # -- to implement --------------------------------------------------------------------------
    def _check_device_present(self) -> None:
        """Raise ValueError naming what the framework sees when `self.device` is absent."""

    def _forward(self, params: dict[str, np.ndarray], x: np.ndarray, cfg: TromptConfig) -> np.ndarray:
        raise NotImplementedError

    def _loss_and_grad(self, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                       cfg: TromptConfig) -> tuple[float, dict[str, np.ndarray]]:
        raise NotImplementedError

    def device_name(self) -> str:
        """Human-readable name of the device, e.g. the CPU model or 'NVIDIA H100'."""
        from bench.sysinfo import cpu_name  # numpy-only helper

        return cpu_name()

    def versions(self) -> dict[str, str]:
        return {}

    # -- public, validated ---------------------------------------------------------------------
    def _cast(self, params: dict, x: np.ndarray, cfg: TromptConfig) -> tuple[dict, np.ndarray]:
        spec.check_params(params, cfg)
        spec.check_x(x, cfg)
        params = {k: np.asarray(v, dtype=self.dtype) for k, v in params.items()}
        return params, np.asarray(x, dtype=self.dtype)

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray, cfg: TromptConfig) -> np.ndarray:
        params, x = self._cast(params, x, cfg)
        return np.asarray(self._forward(params, x, cfg))

    def loss_and_grad(self, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                      cfg: TromptConfig) -> tuple[float, dict[str, np.ndarray]]:
        params, x = self._cast(params, x, cfg)
        spec.check_y(y, x)
        loss, grads = self._loss_and_grad(params, x, np.asarray(y, dtype=self.dtype), cfg)
        return float(loss), {k: np.asarray(grads[k]) for k in spec.param_names(cfg)}

    def train_steps(self, params: dict[str, np.ndarray], batches: list, cfg: TromptConfig,
                    lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                    state: dict | None = None) -> tuple[dict[str, np.ndarray], list[float]]:
        """AdamW (torch semantics) over `batches`; `state` (m, v, step) carries over between calls.

        This default uses the numpy AdamW of `spec.adamw_update` on the backend's gradients;
        a backend overrides it to test its own framework optimizer.
        """
        params, _ = self._cast(params, np.zeros((1, cfg.n_columns)), cfg)
        state = {} if state is None else state
        losses = []
        for x, y in batches:
            loss, grads = self.loss_and_grad(params, x, y, cfg)
            step = state["step"] = state.get("step", 0) + 1
            for k, g in grads.items():
                m, v = state.get(("m", k), np.zeros_like(g)), state.get(("v", k), np.zeros_like(g))
                params[k], state[("m", k)], state[("v", k)] = spec.adamw_update(
                    params[k], g, m, v, step, lr, weight_decay)
            losses.append(loss)
        return params, losses

    def trainer(self, params: dict[str, np.ndarray], cfg: TromptConfig, x_train: np.ndarray,
                y_train: np.ndarray, lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                **options: Any) -> Trainer:
        """A device-resident trainer over the whole training set (see `Trainer`)."""
        params, x_train = self._cast(params, x_train, cfg)
        spec.check_y(y_train, x_train)
        return self.trainer_class(self, params, cfg, x_train, np.asarray(y_train, self.dtype),
                                  lr, weight_decay, **options)
