"""The reference model behind the backend contract (`backends.load("reference")`).

Its optimizer is the original's: `torch.optim.AdamW` with its default implementation, and its
training loop is the original's: index on the host, copy the batch, step, read the loss back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from backends import spec
from backends.base import Backend, Trainer
from backends.spec import TromptConfig
from backends.torch.device import OP_TIME_BASIS, profile_ops
from reference.model import Trompt, mse_over_cycles

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_model(params: dict[str, np.ndarray], cfg: TromptConfig, dtype: str, device: str = "cpu") -> Trompt:
    """A reference Trompt holding a copy of `params` (canonical names = its state_dict names)."""
    model = Trompt(cfg).to(device=device, dtype=TORCH_DTYPES[dtype])
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in params.items()}
    model.load_state_dict(state, strict=True)
    return model


def model_params(model: Trompt) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.named_parameters()}


def make_optimizer(model: Trompt, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                             betas=spec.BETAS, eps=spec.ADAM_EPS)


class ReferenceTrainer(Trainer):
    """The original loop's state: one model, one AdamW, each batch copied to the device per step
    and its loss read back (`loss.item()`), as the original script does."""

    predict_chunk = 8  # the (B, P, C, D) expansion costs P*C*D numbers per row and cell

    def __init__(self, backend: ReferenceBackend, params: dict[str, np.ndarray], cfg: TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float, weight_decay: float,
                 options: dict[str, Any]) -> None:
        super().__init__(backend, params, cfg, x_train, y_train, lr, weight_decay, options)
        self.x_train, self.y_train = x_train, y_train
        self.model = build_model(params, cfg, backend.dtype, backend.device)
        self.optimizer = make_optimizer(self.model, lr, weight_decay)
        self._losses: list[float] = []

    def _run(self, batches: list[np.ndarray]) -> None:
        for idx in batches:
            x, y = self.backend.to_device(self.x_train[idx]), self.backend.to_device(self.y_train[idx])
            self.optimizer.zero_grad()
            loss = mse_over_cycles(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            self._losses.append(loss.item())

    def sync(self) -> None:
        if self.backend.device == "cuda":
            torch.cuda.synchronize()

    def losses(self) -> list[float]:
        return list(self._losses)

    op_time_basis = OP_TIME_BASIS

    def op_times(self, batches: Sequence[np.ndarray]) -> list[tuple[str, float, int]]:
        """torch.profiler's self time per op, as the torch backend's."""
        return profile_ops(self, batches, self.backend.device)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(self.backend.to_device(x)).cpu().numpy()

    def _gradients(self, rows: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        self.optimizer.zero_grad()
        x, y = self.backend.to_device(self.x_train[rows]), self.backend.to_device(self.y_train[rows])
        loss = mse_over_cycles(self.model(x), y)
        loss.backward()
        grads = {k: (np.zeros(tuple(p.shape)) if p.grad is None else p.grad.cpu().numpy().copy())
                 for k, p in self.model.named_parameters()}
        self.optimizer.zero_grad()
        return loss.item(), grads

    def params(self) -> dict[str, np.ndarray]:
        return model_params(self.model)

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        step = 0
        for name, p in self.model.named_parameters():
            out[f"param/{name}"] = p.detach().cpu().numpy().copy()
            st = self.optimizer.state.get(p, {})
            for moment in ("exp_avg", "exp_avg_sq"):
                out[f"{moment}/{name}"] = (st[moment].cpu().numpy().copy() if moment in st
                                           else np.zeros_like(out[f"param/{name}"]))
            step = int(st["step"]) if "step" in st else step
        out["step"] = np.array(step, dtype=np.int64)
        return out

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(torch.as_tensor(state[f"param/{name}"]))
        saved = self.optimizer.state_dict()
        step = int(state["step"])
        # torch.optim.AdamW keeps no state before its first step; from step 1 on, every parameter's.
        saved["state"] = {} if step == 0 else {
            i: {"step": torch.tensor(float(step)),
                "exp_avg": torch.as_tensor(state[f"exp_avg/{name}"]).clone().to(self.backend.device),
                "exp_avg_sq": torch.as_tensor(state[f"exp_avg_sq/{name}"]).clone().to(self.backend.device)}
            for i, (name, _) in enumerate(self.model.named_parameters())}
        self.optimizer.load_state_dict(saved)

    def peak_memory_mb(self) -> float | None:
        if self.backend.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return None


class ReferenceBackend(Backend):
    name = "reference"
    devices = ("cpu", "cuda")
    trainer_class = ReferenceTrainer

    def _check_device_present(self) -> None:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA GPU")

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=TORCH_DTYPES[self.dtype], device=self.device)

    def device_name(self) -> str:
        if self.device == "cuda":
            return torch.cuda.get_device_name()
        return super().device_name()

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "threads": str(torch.get_num_threads())}
