"""Training in MLX: AdamW with torch's semantics, and the compiled, device-resident train step.

Reads top to bottom like every backend's train.py: optimizer, compiled step, then the trainer
that owns parameters, optimizer state and the whole training set (see backends/base.py).
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from backends import spec
from backends.base import Trainer, check_state
from backends.mlx.model import (
    MLX_DTYPES,
    forward,
    mse_over_cycles,
    to_mlx,
    to_numpy,
)
from backends.mlx.parallel import check_parallel
from backends.spec import stack_cells, unstack_cells


class TorchAdamW(optim.AdamW):
    """mlx.optimizers.AdamW made to compute exactly what torch.optim.AdamW computes.

    MLX's AdamW already decays decoupled, before the Adam step, and puts eps outside the square
    root like torch. Two things differ (frameworks_notes.md §3), and this subclass fixes both:
      - bias correction is off by default in MLX; torch always applies it;
      - with it on, MLX evaluates beta**step in float32 (even for float64 parameters), and
        1 - 0.999 is then off by 1.3e-5 relative, which shifts every early update by ~6e-6.
    Like torch, the two step-dependent scalars are computed on the host in float64 by
    `prepare_step()`, which must be called once before each `apply_gradients` (outside any
    mx.compile: a compiled step replays, it does not rerun Python). Computing them on the device
    instead (-expm1(t ln beta)) was exact too, but mx.compile fused that scalar work into every
    element's update and made the step ~10x slower on CPU.
    """

    def __init__(self, learning_rate: float, weight_decay: float, dtype: str) -> None:
        super().__init__(learning_rate=learning_rate, betas=list(spec.BETAS), eps=spec.ADAM_EPS,
                         weight_decay=weight_decay, bias_correction=True)
        self.lr_host, self.dtype = learning_rate, MLX_DTYPES[dtype]
        self.host_step = 0

    def prepare_step(self) -> None:
        """Count one step; store lr/(1 - beta1^t), 1/sqrt(1 - beta2^t) and the decay factor."""
        self.host_step += 1
        t, (beta1, beta2) = self.host_step, self.betas
        self.state["step_size"] = mx.array(self.lr_host / (1 - beta1**t), dtype=self.dtype)
        self.state["bias2_rsqrt"] = mx.array(1 / math.sqrt(1 - beta2**t), dtype=self.dtype)
        self.state["decay"] = mx.array(1 - self.lr_host * self.weight_decay, dtype=self.dtype)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        beta1, beta2 = self.betas
        m = state["m"] = beta1 * state["m"] + (1 - beta1) * gradient
        v = state["v"] = beta2 * state["v"] + (1 - beta2) * mx.square(gradient)
        scalars = self.state  # this optimizer's own state: the scalars of prepare_step
        decayed = parameter * scalars["decay"]  # decoupled decay uses the pre-update parameter
        return decayed - scalars["step_size"] * m / (mx.sqrt(v) * scalars["bias2_rsqrt"] + self.eps)


class MLXTrainer(Trainer):
    """Parameters (stacked by cell), AdamW state and the training set, all as MLX arrays.

    Options: compile=True (mx.compile the whole step: forward, backward and AdamW); parallel
    (only None/"none": see parallel.py).
    Each step is queued with mx.async_eval, so the host never waits for a loss.
    """

    predict_chunk = 64  # rows per forward in predict(); the (N, B, C, D) activation stays < 0.2 GB

    def __init__(self, backend: Any, params: dict[str, np.ndarray], cfg: spec.TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float = spec.LR,
                 weight_decay: float = spec.WEIGHT_DECAY, *, compile: bool = True,
                 parallel: str | None = None, **options: Any) -> None:
        if options:
            raise ValueError(f"unknown option(s) for backend 'mlx': {', '.join(sorted(options))} "
                             "(known: compile, parallel)")
        check_parallel(parallel)
        self.backend, self.cfg, self.lr, self.weight_decay = backend, cfg, lr, weight_decay
        dtype = MLX_DTYPES[backend.dtype]
        self.x_train = mx.array(x_train, dtype=dtype)  # on the device once
        self.y_train = mx.array(y_train, dtype=dtype)
        self.optimizer = TorchAdamW(lr, weight_decay, backend.dtype)
        stacked = to_mlx(stack_cells(params, cfg), backend.dtype)
        self.optimizer.init(stacked)
        # Everything the step reads and writes, declared to mx.compile as its state.
        self.device_state = {"params": stacked, "optimizer": self.optimizer.state}
        self._losses: list[mx.array] = []

        def train_step(idx: mx.array, x_train: mx.array, y_train: mx.array) -> mx.array:
            params = self.device_state["params"]
            loss, grads = mx.value_and_grad(mse_over_cycles)(params, x_train[idx], y_train[idx])
            self.device_state["params"] = self.optimizer.apply_gradients(grads, params)
            return loss

        if compile:
            train_step = mx.compile(train_step, inputs=self.device_state, outputs=self.device_state)
        self._train_step = train_step
        self._forward = mx.compile(forward) if compile else forward

    def step(self, idx: np.ndarray) -> None:
        self.optimizer.prepare_step()
        loss = self._train_step(mx.array(np.asarray(idx), dtype=mx.int32), self.x_train, self.y_train)
        mx.async_eval(loss, self.device_state)
        self._losses.append(loss)

    def sync(self) -> None:
        mx.eval(self.device_state, self._losses)

    def losses(self) -> list[float]:
        mx.eval(self._losses)
        return [loss.item() for loss in self._losses]

    def predict(self, x: np.ndarray) -> np.ndarray:
        spec.check_x(x, self.cfg)
        dtype = MLX_DTYPES[self.backend.dtype]
        rows = range(0, len(x), self.predict_chunk)
        chunks = [mx.array(x[i:i + self.predict_chunk], dtype=dtype) for i in rows]
        parts = [np.array(self._forward(self.device_state["params"], chunk)) for chunk in chunks]
        return np.concatenate(parts)

    def params(self) -> dict[str, np.ndarray]:
        mx.eval(self.device_state)
        return unstack_cells(to_numpy(self.device_state["params"]), self.cfg)

    def peak_memory_mb(self) -> float | None:
        return mx.get_peak_memory() / 2**20

    # -- checkpointing (keys as in backends/base.py: param/, exp_avg/, exp_avg_sq/, step) ------
    def state(self) -> dict[str, np.ndarray]:
        mx.eval(self.device_state)
        moments = self.optimizer.state
        out = {f"param/{k}": v for k, v in self.params().items()}
        for moment, key in (("exp_avg", "m"), ("exp_avg_sq", "v")):
            stacked = {leaf: np.array(moments[leaf][key]) for leaf in self.device_state["params"]}
            out.update({f"{moment}/{k}": v for k, v in unstack_cells(stacked, self.cfg).items()})
        out["step"] = np.array(self.optimizer.host_step, dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        def part(prefix: str) -> dict[str, mx.array]:
            named = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(prefix + "/")}
            return to_mlx(stack_cells(named, self.cfg), self.backend.dtype)

        check_state(state, self.cfg)  # every key, every shape: one-line ValueErrors
        params, m, v = part("param"), part("exp_avg"), part("exp_avg_sq")
        self.device_state["params"] = params
        for leaf in params:
            self.optimizer.state[leaf] = {"m": m[leaf], "v": v[leaf]}
        self.optimizer.host_step = int(state["step"])
        self.optimizer.state["step"] = mx.array(int(state["step"]), dtype=mx.uint64)
