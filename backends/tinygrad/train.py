"""Training in tinygrad: AdamW with torch's semantics, and the TinyJit'd, device-resident step.

Reads top to bottom like every backend's train.py: optimizer, jitted step, then the trainer
that owns parameters, optimizer state and the training set (see backends/base.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tinygrad import Tensor, TinyJit

from backends import spec
from backends.base import Trainer, check_state
from backends.spec import stack_cells, unstack_cells
from backends.tinygrad.model import TINYGRAD_DTYPES, forward, to_numpy, to_tensors
from backends.tinygrad.parallel import check_parallel


class TorchAdamW:
    """torch.optim.AdamW written in tinygrad ops (the update rule of spec.adamw_update).

    tinygrad's own nn.optim.AdamW has torch's formula (decoupled decay on the pre-update
    parameter, eps outside the square root, bias correction), but keeps beta1**t, beta2**t and
    lr as float32 tensors whatever the parameter dtype: 1 - 0.999 is then off by 1.3e-5 relative
    and every early update by ~6e-6 (tests/backends/test_tinygrad.py measures it). Here the two
    step-dependent scalars are computed on the host in float64, as torch does, and fed to the
    jitted step as a tiny input tensor.
    """

    def __init__(self, params: dict[str, Tensor], lr: float, weight_decay: float) -> None:
        self.lr, self.weight_decay = lr, weight_decay
        self.beta1, self.beta2 = spec.BETAS
        self.steps_taken = 0
        self.m = {k: Tensor.zeros(*p.shape, dtype=p.dtype, device=p.device).contiguous().realize()
                  for k, p in params.items()}
        self.v = {k: Tensor.zeros(*p.shape, dtype=p.dtype, device=p.device).contiguous().realize()
                  for k, p in params.items()}

    def next_step_scalars(self) -> tuple[float, float]:
        """Count one step; return (lr / (1 - beta1**t), 1 / sqrt(1 - beta2**t)) in float64."""
        self.steps_taken += 1
        t = self.steps_taken
        return self.lr / (1 - self.beta1**t), 1 / math.sqrt(1 - self.beta2**t)

    def schedule_update(self, params: dict[str, Tensor], grads: dict[str, Tensor],
                        step_size: Tensor, bias2_rsqrt: Tensor) -> list[Tensor]:
        """Assign the updated m, v and parameters (lazily); returns what must be realized."""
        for k, p in params.items():
            g = grads[k]
            m = self.m[k].assign(self.beta1 * self.m[k] + (1 - self.beta1) * g)
            v = self.v[k].assign(self.beta2 * self.v[k] + (1 - self.beta2) * (g * g))
            decayed = p * (1 - self.lr * self.weight_decay)  # decoupled decay of the pre-update value
            p.assign(decayed - step_size * m / (v.sqrt() * bias2_rsqrt + spec.ADAM_EPS))
        return [*params.values(), *self.m.values(), *self.v.values()]


class TinygradTrainer(Trainer):
    """Parameters (stacked by cell), AdamW state and a per-step loss log as tinygrad buffers.

    The step (forward, backward, AdamW) is one TinyJit: call 1 runs and compiles, call 2 records,
    later calls replay the recorded kernels. TinyJit needs identical input shapes, so a short last
    batch is padded to the batch size with zero rows of weight 0: their loss terms and gradients
    are exactly zero, and no second compilation happens mid-epoch.

    The training set stays in host memory and each step copies its 8 rows in: tinygrad has no
    gather kernel, and indexing a device tensor by a tensor of indices compiles to a compare
    against every row (measured 10-30 ms per step for 50k rows, more than the step itself).

    Options: parallel (only None/"none": see parallel.py).
    """

    loss_log_size = 1024  # per-step losses kept on the device, read back once this many are logged
    predict_chunk = 64

    def __init__(self, backend: Any, params: dict[str, np.ndarray], cfg: spec.TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float = spec.LR,
                 weight_decay: float = spec.WEIGHT_DECAY, *, parallel: str | None = None,
                 **options: Any) -> None:
        if options:
            raise ValueError(f"unknown option(s) for backend 'tinygrad': {', '.join(sorted(options))} "
                             "(known: parallel)")
        check_parallel(parallel)
        self.backend, self.cfg, self.lr, self.weight_decay = backend, cfg, lr, weight_decay
        self.dtype, self.device = backend.dtype, backend.tinygrad_device
        self.x_train = np.ascontiguousarray(x_train, dtype=self.dtype)
        self.y_train = np.ascontiguousarray(y_train, dtype=self.dtype)
        self.params_t = to_tensors(stack_cells(params, cfg), self.dtype, self.device)
        self.optimizer = TorchAdamW(self.params_t, lr, weight_decay)
        self.loss_log = Tensor.zeros(self.loss_log_size, dtype=TINYGRAD_DTYPES[self.dtype],
                                     device=self.device).contiguous().realize()
        self._slot_ids = self._tensor(np.arange(self.loss_log_size))
        self._logged = 0  # losses written into loss_log since the last read-back
        self._host_losses: list[float] = []
        self.batch_size: int | None = None  # fixed by the first step; the jit's input shape
        self._jit_step = TinyJit(self._train_step)
        # Prediction replays one jitted forward on fixed-size chunks; it reads the parameter
        # buffers that training updates in place, so it always sees the current weights.
        self._jit_forward = TinyJit(lambda x: forward(self.params_t, x).realize())

    def _train_step(self, x: Tensor, y: Tensor, row_weight: Tensor, scalars: Tensor) -> None:
        """scalars = [lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t), slot of this step in loss_log]."""
        pred = forward(self.params_t, x)  # (B, N)
        # Mean over the real rows and the N cycles; padded rows have weight 0.
        loss = (((pred - y.unsqueeze(1)) ** 2).mean(axis=1) * row_weight).sum()
        names = list(self.params_t)
        grads = dict(zip(names, loss.gradient(*[self.params_t[k] for k in names]), strict=True))
        updates = self.optimizer.schedule_update(self.params_t, grads, scalars[0], scalars[1])
        slot = self._slot_ids == scalars[2]
        self.loss_log.assign(slot.where(loss, self.loss_log))
        # Realize the loss with the update: a loss left lazy would be read after the in-place
        # update and come from the new weights (frameworks_notes.md §2, the footgun).
        Tensor.realize(self.loss_log, *updates)

    def _tensor(self, array: np.ndarray) -> Tensor:
        return Tensor(np.ascontiguousarray(array, dtype=self.dtype), device=self.device,
                      dtype=TINYGRAD_DTYPES[self.dtype]).realize()

    def step(self, idx: np.ndarray) -> None:
        idx = np.asarray(idx)
        if self.batch_size is None or len(idx) > self.batch_size:
            self.batch_size = len(idx)
            self._jit_step = TinyJit(self._train_step)  # a new input shape needs a new jit
        if self._logged == self.loss_log_size:
            self._read_back_losses()
        pad = self.batch_size - len(idx)
        x = np.concatenate([self.x_train[idx], np.zeros((pad, self.cfg.n_columns), self.dtype)])
        y = np.concatenate([self.y_train[idx], np.zeros(pad, self.dtype)])
        row_weight = np.concatenate([np.full(len(idx), 1 / len(idx)), np.zeros(pad)])
        step_size, bias2_rsqrt = self.optimizer.next_step_scalars()
        scalars = np.array([step_size, bias2_rsqrt, self._logged])
        self._jit_step(self._tensor(x), self._tensor(y), self._tensor(row_weight), self._tensor(scalars))
        self._logged += 1

    def _read_back_losses(self) -> None:
        self._host_losses += self.loss_log.numpy()[:self._logged].tolist()
        self._logged = 0

    def run(self, batches: list[np.ndarray]) -> None:
        for idx in batches:
            self.step(idx)

    def sync(self) -> None:
        # Device work is queued asynchronously on GPUs; a tiny read of the log waits for it.
        self.loss_log[0].item()

    def losses(self) -> list[float]:
        return self._host_losses + self.loss_log.numpy()[:self._logged].tolist()

    def predict(self, x: np.ndarray) -> np.ndarray:
        spec.check_x(x, self.cfg)
        parts = []
        for i in range(0, len(x), self.predict_chunk):
            chunk = x[i:i + self.predict_chunk]
            padded = np.zeros((self.predict_chunk, self.cfg.n_columns))  # one shape: one compilation
            padded[:len(chunk)] = chunk
            # .numpy() copies out at once: the jit reuses its output buffer on the next call
            parts.append(self._jit_forward(self._tensor(padded)).numpy()[:len(chunk)])
        return np.concatenate(parts)

    def params(self) -> dict[str, np.ndarray]:
        return unstack_cells(to_numpy(self.params_t), self.cfg)

    def peak_memory_mb(self) -> float | None:
        return None  # tinygrad keeps no peak counter on CPU; bench falls back to host RSS

    # -- checkpointing (keys as in backends/base.py: param/, exp_avg/, exp_avg_sq/, step) ------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"param/{k}": v for k, v in self.params().items()}
        for moment, tensors in (("exp_avg", self.optimizer.m), ("exp_avg_sq", self.optimizer.v)):
            out.update({f"{moment}/{k}": v for k, v in unstack_cells(to_numpy(tensors), self.cfg).items()})
        out["step"] = np.array(self.optimizer.steps_taken, dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        def part(prefix: str) -> dict[str, np.ndarray]:
            named = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(prefix + "/")}
            return stack_cells(named, self.cfg)

        check_state(state, self.cfg)  # every key, every shape: one-line ValueErrors
        loaded = [(self.params_t, part("param")), (self.optimizer.m, part("exp_avg")),
                  (self.optimizer.v, part("exp_avg_sq"))]
        # assign into the existing buffers: the jit replays kernels bound to exactly these
        Tensor.realize(*[tensors[k].assign(self._tensor(values[k]))
                         for tensors, values in loaded for k in tensors])
        self.optimizer.steps_taken = int(state["step"])
