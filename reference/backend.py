"""The reference model behind the common backend API (`backends.load("reference")`).

Its optimizer is the original's: `torch.optim.AdamW` with its default implementation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from backends import spec
from backends.base import Backend, Trainer, batches_as_rows, check_state
from backends.spec import TromptConfig
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
    """The original loop's state: one model, one AdamW, batches moved to the device per step."""

    def __init__(self, backend: ReferenceBackend, params: dict[str, np.ndarray], cfg: TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float = spec.LR,
                 weight_decay: float = spec.WEIGHT_DECAY, **options: Any) -> None:
        super().__init__(backend, params, cfg, x_train, y_train, lr, weight_decay, **options)
        self.model = build_model(params, cfg, backend.dtype, backend.device)
        self.optimizer = make_optimizer(self.model, lr, weight_decay)

    def step(self, idx: np.ndarray) -> None:
        x, y = self.backend.to_device(self.x_train[idx]), self.backend.to_device(self.y_train[idx])
        self.optimizer.zero_grad()
        loss = mse_over_cycles(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self._losses.append(loss.item())  # the original prints/reads the loss every step

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.backend.predict_in_chunks(self.model, x)

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
            step = int(st["step"]) if "step" in st else 0
        out["step"] = np.array(step, dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, self.cfg)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(torch.as_tensor(state[f"param/{name}"]))
        step = int(state["step"])
        if step == 0:
            return
        saved = self.optimizer.state_dict()
        saved["state"] = {
            i: {"step": torch.tensor(float(step)),
                "exp_avg": torch.as_tensor(state[f"exp_avg/{name}"]).clone(),
                "exp_avg_sq": torch.as_tensor(state[f"exp_avg_sq/{name}"]).clone()}
            for i, (name, _) in enumerate(self.model.named_parameters())}
        self.optimizer.load_state_dict(saved)

    def sync(self) -> None:
        if self.backend.device == "cuda":
            torch.cuda.synchronize()

    def peak_memory_mb(self) -> float | None:
        if self.backend.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return None


class ReferenceBackend(Backend):
    name = "reference"
    devices = ("cpu", "cuda")
    trainer_class = ReferenceTrainer
    # The (B, P, C, D) expansion of one row costs P*C*D numbers per cell; inference is chunked
    # so that validation at batch 1024 fits in memory. Rows are independent: same results.
    predict_chunk = 8

    def _check_device_present(self) -> None:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA GPU")

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=TORCH_DTYPES[self.dtype], device=self.device)

    def predict_in_chunks(self, model: Trompt, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = [model(self.to_device(x[i:i + self.predict_chunk])).cpu().numpy()
                     for i in range(0, len(x), self.predict_chunk)]
        return np.concatenate(parts)

    def _forward(self, params: dict[str, np.ndarray], x: np.ndarray, cfg: TromptConfig) -> np.ndarray:
        return self.predict_in_chunks(build_model(params, cfg, self.dtype, self.device), x)

    def _loss_and_grad(self, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                       cfg: TromptConfig) -> tuple[float, dict[str, np.ndarray]]:
        model = build_model(params, cfg, self.dtype, self.device)
        loss = mse_over_cycles(model(self.to_device(x)), self.to_device(y))
        loss.backward()
        grads = {k: v.grad.cpu().numpy() for k, v in model.named_parameters()}
        return loss.item(), grads

    def train_steps(self, params: dict[str, np.ndarray], batches: list, cfg: TromptConfig,
                    lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                    state: dict | None = None) -> tuple[dict[str, np.ndarray], list[float]]:
        """The original optimizer (torch.optim.AdamW) rather than the numpy yardstick."""
        x_all, y_all, rows = batches_as_rows(batches, cfg)
        trainer = self.trainer(params, cfg, x_all, y_all, lr, weight_decay)
        for idx in rows:
            trainer.step(idx)
        return trainer.params(), trainer.losses()

    def device_name(self) -> str:
        if self.device == "cuda":
            return torch.cuda.get_device_name()
        return super().device_name()

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}


def make_backend(device: str = "cpu", dtype: str = "float32") -> ReferenceBackend:
    return ReferenceBackend(device=device, dtype=dtype)
