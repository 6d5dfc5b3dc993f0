"""MLX backend: the R5 rewrite of Trompt (model.py), compiled with mx.compile (train.py).

    b = backends.load("mlx", device="cpu", dtype="float32")

Devices: "cpu" (Linux needs the mlx[cpu] wheel) and "gpu" (Metal on a Mac, or an mlx[cuda]
build). float64 exists on the CPU only. The contract is in backends/base.py.

BLAS on Linux: the mlx-cpu wheel links a bundled netlib *reference* BLAS, ~50x slower than
OpenBLAS on this model's GEMMs (docs/REPORT.md). When a system OpenBLAS is present it is loaded
here with RTLD_GLOBAL before mlx.core, so MLX's cblas_sgemm/dgemm calls resolve to it.
TROMPT_MLX_BLAS=<path to a libopenblas.so> picks another; TROMPT_MLX_BLAS=bundled keeps MLX's.
"""

# ruff: noqa: E402  (mlx.core must be imported after the BLAS preload below)
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",  # Debian/Ubuntu libopenblas0-pthread
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
)


def _preload_blas() -> str:
    """Load OpenBLAS globally before mlx.core binds its BLAS symbols; returns what MLX will use."""
    if sys.platform != "linux":
        return "platform BLAS (Accelerate on macOS)"
    if "mlx.core" in sys.modules:  # too late to change the binding in this process
        return "bundled reference BLAS (mlx.core was imported before backends.mlx)"
    choice = os.environ.get("TROMPT_MLX_BLAS", "")
    if choice == "bundled":
        return "bundled reference BLAS (TROMPT_MLX_BLAS=bundled)"
    path = choice or next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)
    if path is None:
        return "bundled reference BLAS (no system OpenBLAS: apt-get install libopenblas0-pthread)"
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise ValueError(f"TROMPT_MLX_BLAS: cannot load {path}: {e}") from None
    return f"OpenBLAS {path}"


BLAS_IN_USE = _preload_blas()

import mlx.core as mx
import numpy as np

from backends import spec
from backends.base import Backend, batches_as_rows
from backends.mlx.model import (
    MLX_DTYPES,
    forward,
    mse_over_cycles,
    to_mlx,
    to_numpy,
)
from backends.mlx.train import MLXTrainer, TorchAdamW
from backends.spec import stack_cells, unstack_cells

__all__ = ["MLXBackend", "TorchAdamW", "make_backend"]


class MLXBackend(Backend):
    name = "mlx"
    devices = ("cpu", "gpu")
    trainer_class = MLXTrainer

    def _check_device_present(self) -> None:
        if self.device == "gpu":
            if not mx.is_available(mx.gpu):
                raise ValueError("device 'gpu' requested but MLX sees no GPU "
                                 "(it needs Metal on macOS, or the mlx[cuda] build)")
            if self.dtype == "float64":
                raise ValueError("MLX supports float64 on the CPU only; use dtype float32 on 'gpu'")
        # One backend per process (bench runs each in its own), so setting the default is enough.
        mx.set_default_device(mx.gpu if self.device == "gpu" else mx.cpu)

    def _stacked(self, params: dict[str, np.ndarray], cfg: spec.TromptConfig) -> dict[str, mx.array]:
        return to_mlx(stack_cells(params, cfg), self.dtype)

    def _forward(self, params: dict[str, np.ndarray], x: np.ndarray, cfg: spec.TromptConfig) -> np.ndarray:
        return np.array(forward(self._stacked(params, cfg), mx.array(x, dtype=MLX_DTYPES[self.dtype])))

    def _loss_and_grad(self, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                       cfg: spec.TromptConfig) -> tuple[float, dict[str, np.ndarray]]:
        dtype = MLX_DTYPES[self.dtype]
        loss, grads = mx.value_and_grad(mse_over_cycles)(
            self._stacked(params, cfg), mx.array(x, dtype=dtype), mx.array(y, dtype=dtype))
        return loss.item(), unstack_cells(to_numpy(grads), cfg)

    def train_steps(self, params: dict[str, np.ndarray], batches: list, cfg: spec.TromptConfig,
                    lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                    state: dict | None = None) -> tuple[dict[str, np.ndarray], list[float]]:
        """MLX's own (torch-corrected) AdamW through the compiled trainer, not the numpy yardstick.
        `state` carries the optimizer state (m, v, step) from one call to the next."""
        x_all, y_all, rows = batches_as_rows(batches, cfg)
        if not batches:
            return {k: np.array(v) for k, v in params.items()}, []
        trainer = self.trainer(params, cfg, x_all, y_all, lr, weight_decay)
        if state is not None and "mlx_optimizer" in state:
            saved_state, trainer.optimizer.host_step = state["mlx_optimizer"]
            trainer.optimizer.state.update(saved_state)
        for idx in rows:
            trainer.step(idx)
        trainer.sync()
        if state is not None:
            state["mlx_optimizer"] = (trainer.optimizer.state, trainer.optimizer.host_step)
        return trainer.params(), trainer.losses()

    def versions(self) -> dict[str, str]:
        return {"mlx": mx.__version__, "mlx_blas": BLAS_IN_USE}


def make_backend(device: str = "cpu", dtype: str = "float32") -> MLXBackend:
    return MLXBackend(device=device, dtype=dtype)
