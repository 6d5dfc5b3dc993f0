"""Training in MLX: AdamW with torch's semantics, the compiled, device-resident train step, and
the Backend that `backends.load("mlx", device, dtype)` returns.

Reads top to bottom like every backend's train.py: optimizer, trainer (it owns parameters,
optimizer state and the whole training set; see backends/base.py), then the backend.

    b = backends.load("mlx", device="cpu", dtype="float32")

Devices: "cpu" (Linux needs the mlx[cpu] wheel) and "gpu" (Metal on a Mac, or an mlx[cuda]
build). float64 exists on the CPU only. Which BLAS the CPU uses: see blas.py.
"""

from __future__ import annotations

import math
from typing import Any

from backends.mlx.blas import BLAS_IN_USE  # its OpenBLAS preload must precede mlx.core

# isort: split
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from backends import spec
from backends.base import Backend, Option, Trainer
from backends.mlx.model import MLX_DTYPES, forward, mse_over_cycles, to_mlx, to_numpy
from backends.mlx.parallel import PARALLEL_OPTION
from backends.spec import stack_cells, unstack_cells


class TorchAdamW(optim.AdamW):
    """mlx.optimizers.AdamW made to compute exactly what torch.optim.AdamW computes.

    MLX's AdamW already decays decoupled, before the Adam step, and puts eps outside the square
    root like torch. Two things differ (docs/REPORT.md, MLX), and this subclass fixes both:
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

    Each step is queued with mx.async_eval, so the host never waits for a loss.
    """

    predict_chunk = 64  # the (N, B, C, D) activation stays < 0.2 GB at full size

    def __init__(self, backend: MLXBackend, params: dict[str, np.ndarray], cfg: spec.TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float, weight_decay: float,
                 options: dict[str, Any]) -> None:
        super().__init__(backend, params, cfg, x_train, y_train, lr, weight_decay, options)
        self.dtype = MLX_DTYPES[backend.dtype]
        self.x_train = mx.array(x_train, dtype=self.dtype)  # on the device once
        self.y_train = mx.array(y_train, dtype=self.dtype)
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

        value_and_grad = mx.value_and_grad(mse_over_cycles)
        if options["compile"]:
            train_step = mx.compile(train_step, inputs=self.device_state, outputs=self.device_state)
            value_and_grad = mx.compile(value_and_grad)
        self._train_step = train_step
        self._value_and_grad = value_and_grad
        self._forward = mx.compile(forward) if options["compile"] else forward

    def _run(self, batches: list[np.ndarray]) -> None:
        for idx in batches:
            self.optimizer.prepare_step()
            loss = self._train_step(mx.array(idx, dtype=mx.int32), self.x_train, self.y_train)
            mx.async_eval(loss, self.device_state)
            self._losses.append(loss)

    def sync(self) -> None:
        mx.eval(self.device_state, self._losses)

    def losses(self) -> list[float]:
        mx.eval(self._losses)
        return [loss.item() for loss in self._losses]

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.array(self._forward(self.device_state["params"], mx.array(x, dtype=self.dtype)))

    def _gradients(self, rows: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        idx = mx.array(rows, dtype=mx.int32)
        loss, grads = self._value_and_grad(self.device_state["params"], self.x_train[idx], self.y_train[idx])
        mx.eval(loss, grads)
        return loss.item(), unstack_cells(to_numpy(grads), self.cfg)

    def params(self) -> dict[str, np.ndarray]:
        mx.eval(self.device_state)
        return unstack_cells(to_numpy(self.device_state["params"]), self.cfg)

    def peak_memory_mb(self) -> float | None:
        return mx.get_peak_memory() / 2**20

    def state(self) -> dict[str, np.ndarray]:
        mx.eval(self.device_state)
        moments = self.optimizer.state
        out = {f"param/{k}": v for k, v in self.params().items()}
        for moment, key in (("exp_avg", "m"), ("exp_avg_sq", "v")):
            stacked = {leaf: np.array(moments[leaf][key]) for leaf in self.device_state["params"]}
            out.update({f"{moment}/{k}": v for k, v in unstack_cells(stacked, self.cfg).items()})
        out["step"] = np.array(self.optimizer.host_step, dtype=np.int64)
        return out

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        def part(prefix: str) -> dict[str, mx.array]:
            named = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(prefix + "/")}
            return to_mlx(stack_cells(named, self.cfg), self.backend.dtype)

        params, m, v = part("param"), part("exp_avg"), part("exp_avg_sq")
        self.device_state["params"] = params
        for leaf in params:
            self.optimizer.state[leaf] = {"m": m[leaf], "v": v[leaf]}
        self.optimizer.host_step = int(state["step"])
        self.optimizer.state["step"] = mx.array(int(state["step"]), dtype=mx.uint64)


class MLXBackend(Backend):
    name = "mlx"
    devices = ("cpu", "gpu")
    trainer_class = MLXTrainer
    options = (
        Option("compile", bool, True, "mx.compile the step (forward, backward, AdamW) and the forward"),
        PARALLEL_OPTION,
    )

    def _check_device_present(self) -> None:
        if self.device == "gpu":
            if self.dtype == "float64":
                raise ValueError("MLX supports float64 on the CPU only; use dtype float32 on 'gpu'")
            if not mx.is_available(mx.gpu):
                raise ValueError("device 'gpu' requested but MLX sees no GPU "
                                 "(it needs Metal on macOS, or the mlx[cuda] build)")
        # One backend per process (bench runs each in its own), so setting the default is enough.
        mx.set_default_device(mx.gpu if self.device == "gpu" else mx.cpu)

    def versions(self) -> dict[str, str]:
        return {"mlx": mx.__version__, "mlx_blas": BLAS_IN_USE}
