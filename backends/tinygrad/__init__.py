"""tinygrad backend: the R5 rewrite of Trompt (model.py), one TinyJit'd train step (train.py).

    b = backends.load("tinygrad", device="cpu", dtype="float32")

Devices: "cpu" (tinygrad's CPU device: kernels are C compiled by clang, which must be installed;
`DEV=CPU:X86` selects tinygrad's own x86 code generator instead, see docs/REPORT.md), "cuda" and
"metal" where present. float64 everywhere but Metal. The contract is in backends/base.py.
"""

from __future__ import annotations

import importlib.metadata
import shutil

import numpy as np
from tinygrad import Device, Tensor

from backends import spec
from backends.base import Backend, batches_as_rows
from backends.spec import stack_cells, unstack_cells
from backends.tinygrad.model import (
    TINYGRAD_DTYPES,
    forward,
    mse_over_cycles,
    to_tensors,
)
from backends.tinygrad.train import TinygradTrainer, TorchAdamW

__all__ = ["TinygradBackend", "TorchAdamW", "make_backend"]

TINYGRAD_DEVICES = {"cpu": "CPU", "cuda": "CUDA", "metal": "METAL"}


class TinygradBackend(Backend):
    name = "tinygrad"
    devices = tuple(TINYGRAD_DEVICES)
    trainer_class = TinygradTrainer

    @property
    def tinygrad_device(self) -> str:
        return TINYGRAD_DEVICES[self.device]

    def _check_device_present(self) -> None:
        if self.device == "metal" and self.dtype == "float64":
            raise ValueError("Metal has no float64; use dtype float32 on 'metal'")
        try:
            renderer = type(Device[self.tinygrad_device].renderer).__name__
        except Exception as e:  # tinygrad raises many kinds of errors for an absent device
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"device {self.device!r} requested but tinygrad cannot open "
                             f"{self.tinygrad_device}: {reason}") from None
        # The CPU device builds even its runtime helpers with clang; without it the first
        # kernel would fail deep inside tinygrad.
        if self.device == "cpu" and shutil.which("clang") is None:
            raise ValueError(f"tinygrad's CPU device ({renderer}) needs clang on PATH: "
                             "apt-get install clang (or `make` sets it up)")

    def _tensors(self, params: dict[str, np.ndarray], cfg: spec.TromptConfig) -> dict[str, Tensor]:
        return to_tensors(stack_cells(params, cfg), self.dtype, self.tinygrad_device)

    def _input(self, array: np.ndarray) -> Tensor:
        return Tensor(np.ascontiguousarray(array, dtype=self.dtype), device=self.tinygrad_device,
                      dtype=TINYGRAD_DTYPES[self.dtype])

    def _forward(self, params: dict[str, np.ndarray], x: np.ndarray, cfg: spec.TromptConfig) -> np.ndarray:
        return forward(self._tensors(params, cfg), self._input(x)).numpy()

    def _loss_and_grad(self, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                       cfg: spec.TromptConfig) -> tuple[float, dict[str, np.ndarray]]:
        stacked = self._tensors(params, cfg)
        loss = mse_over_cycles(stacked, self._input(x), self._input(y))
        names = list(stacked)
        grads = loss.gradient(*[stacked[k] for k in names])
        Tensor.realize(loss, *grads)
        return loss.item(), unstack_cells({k: g.numpy() for k, g in zip(names, grads, strict=True)}, cfg)

    def train_steps(self, params: dict[str, np.ndarray], batches: list, cfg: spec.TromptConfig,
                    lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                    state: dict | None = None) -> tuple[dict[str, np.ndarray], list[float]]:
        """The jitted trainer and its torch-exact AdamW, not the numpy yardstick.
        `state` carries the trainer (its m, v and step count) from one call to the next."""
        x_all, y_all, rows = batches_as_rows(batches, cfg)
        if not batches:
            return {k: np.array(v) for k, v in params.items()}, []
        trainer = self.trainer(params, cfg, x_all, y_all, lr, weight_decay)
        if state is not None and "tinygrad_optimizer" in state:
            trainer.optimizer = state["tinygrad_optimizer"]  # continue its m, v and step count
        for idx in rows:
            trainer.step(idx)
        if state is not None:
            state["tinygrad_optimizer"] = trainer.optimizer
        return trainer.params(), trainer.losses()

    def versions(self) -> dict[str, str]:
        return {"tinygrad": importlib.metadata.version("tinygrad")}


def make_backend(device: str = "cpu", dtype: str = "float32") -> TinygradBackend:
    return TinygradBackend(device=device, dtype=dtype)
