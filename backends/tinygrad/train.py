"""Training in tinygrad: AdamW with torch's semantics, the TinyJit'd, device-resident step, and
the Backend that `backends.load("tinygrad", device, dtype)` returns.

Reads top to bottom like every backend's train.py: optimizer, trainer (it owns parameters,
optimizer state and the training set; see backends/base.py), then the backend.

    b = backends.load("tinygrad", device="cpu", dtype="float32")

Devices: "cpu" (tinygrad's CPU device: kernels are C compiled by clang, which must be installed;
`DEV=CPU:X86` selects tinygrad's own x86 code generator instead, see docs/REPORT.md), "cuda" and
"metal" where present. float64 everywhere but Metal.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import shutil
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from tinygrad import Context, Device, Tensor, TinyJit
from tinygrad.codegen.opt import search as tinygrad_search

from backends import spec
from backends.base import Backend, Option, Trainer
from backends.spec import stack_cells, unstack_cells
from backends.tinygrad.model import TINYGRAD_DTYPES, forward, to_numpy, to_tensors
from backends.tinygrad.parallel import PARALLEL_OPTION

TINYGRAD_DEVICES = {"cpu": "CPU", "cuda": "CUDA", "metal": "METAL"}


class TorchAdamW:
    """torch.optim.AdamW written in tinygrad ops (the update rule of spec.adamw_update).

    tinygrad's own nn.optim.AdamW has torch's formula (decoupled decay on the pre-update
    parameter, eps outside the square root, bias correction), but keeps beta1**t, beta2**t and
    lr as float32 tensors whatever the parameter dtype: 1 - 0.999 is then off by 1.3e-5 relative
    and every early update by ~6e-6 (tests/backends/tinygrad/test_tinygrad.py measures it). Here the two
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


class BeamSearch:
    """BEAM search for the kernels compiled inside `active()`, and the wall time it took.

    BEAM=n makes tinygrad time candidate loop orders, unrollings and vector widths of each kernel
    and keep the fastest; the winner is stored in tinygrad's on-disk cache (the CACHEDB file,
    ~/.cache/tinygrad/cache.db by default), so each kernel is searched once per machine. While it
    searches, tinygrad lowers kernels in this process and looks `beam_search` up in its module
    at every call, so wrapping that attribute times every search (cache look-ups included).
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.seconds = 0.0
        self.kernels = 0  # kernels lowered with BEAM, found in the cache or searched

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self.width == 0:  # tinygrad's own heuristics, whatever BEAM the environment sets
            with Context(BEAM=0):
                yield
            return
        search = tinygrad_search.beam_search

        def timed_search(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            self.kernels += 1
            try:
                return search(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        tinygrad_search.beam_search = timed_search
        try:
            with Context(BEAM=self.width):
                yield
        finally:
            tinygrad_search.beam_search = search


def padded_size(rows: int) -> int:
    """Rows a batch of `rows` rows is padded to: the next multiple of spec.BATCH_SIZE."""
    return -(-rows // spec.BATCH_SIZE) * spec.BATCH_SIZE


class TinygradTrainer(Trainer):
    """Parameters (stacked by cell), AdamW state and a per-step loss log as tinygrad buffers.

    The step (forward, backward, AdamW) is one TinyJit: call 1 runs and compiles, call 2 records,
    later calls replay the recorded kernels. TinyJit needs identical input shapes, so every batch
    is padded to the next multiple of spec.BATCH_SIZE rows with zero rows of weight 0: their loss
    terms and gradients are exactly zero, and an epoch's short last batch needs no second
    compilation. The padded size depends on the batch alone, never on earlier batches, because
    it decides the kernels and so the rounding: a trainer resumed from a checkpoint must run the
    same kernels as the one that wrote it.

    The training set stays in host memory and each step copies its 8 rows in: tinygrad has no
    gather kernel, and indexing a device tensor by a tensor of indices compiles to a compare
    against every row, which costs more than the step itself at the data's 50k rows.
    """

    loss_log_size = 1024  # per-step losses kept on the device, read back once this many are logged
    predict_chunk = 64

    def __init__(self, backend: TinygradBackend, params: dict[str, np.ndarray], cfg: spec.TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float, weight_decay: float,
                 options: dict[str, Any]) -> None:
        super().__init__(backend, params, cfg, x_train, y_train, lr, weight_decay, options)
        self.dtype, self.device = backend.dtype, backend.tinygrad_device
        self.beam = BeamSearch(options["beam"])
        self.x_train = np.ascontiguousarray(x_train, dtype=self.dtype)
        self.y_train = np.ascontiguousarray(y_train, dtype=self.dtype)
        self.params_t = to_tensors(stack_cells(params, cfg), self.dtype, self.device)
        self.optimizer = TorchAdamW(self.params_t, lr, weight_decay)
        self.loss_log = Tensor.zeros(self.loss_log_size, dtype=TINYGRAD_DTYPES[self.dtype],
                                     device=self.device).contiguous().realize()
        self._slot_ids = self._tensor(np.arange(self.loss_log_size))
        self._logged = 0  # losses written into loss_log since the last read-back
        self._host_losses: list[float] = []
        self._jit_steps: dict[int, TinyJit] = {}  # one per padded batch size (input shape)
        # Prediction replays one jitted forward on fixed-size chunks; it reads the parameter
        # buffers that training updates in place, so it always sees the current weights.
        self._jit_forward = TinyJit(lambda x: forward(self.params_t, x).realize())

    def _loss(self, x: Tensor, y: Tensor, row_weight: Tensor) -> Tensor:
        """Mean over the real rows and the N cycles; padded rows have weight 0."""
        return (((forward(self.params_t, x) - y.unsqueeze(1)) ** 2).mean(axis=1) * row_weight).sum()

    def _grads(self, loss: Tensor) -> dict[str, Tensor]:
        names = list(self.params_t)
        return dict(zip(names, loss.gradient(*[self.params_t[k] for k in names]), strict=True))

    def _train_step(self, x: Tensor, y: Tensor, row_weight: Tensor, scalars: Tensor) -> None:
        """scalars = [lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t), slot of this step in loss_log]."""
        loss = self._loss(x, y, row_weight)
        updates = self.optimizer.schedule_update(self.params_t, self._grads(loss), scalars[0], scalars[1])
        slot = self._slot_ids == scalars[2]
        self.loss_log.assign(slot.where(loss, self.loss_log))
        # Realize the loss with the update: a loss left lazy would be read after the in-place
        # update and come from the new weights.
        Tensor.realize(self.loss_log, *updates)

    def _tensor(self, array: np.ndarray) -> Tensor:
        return Tensor(np.ascontiguousarray(array, dtype=self.dtype), device=self.device,
                      dtype=TINYGRAD_DTYPES[self.dtype]).realize()

    def _batch(self, idx: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """x, y and row weights of the rows `idx`, padded with zero-weight rows to `padded_size`."""
        pad = padded_size(len(idx)) - len(idx)
        x = np.concatenate([self.x_train[idx], np.zeros((pad, self.cfg.n_columns), self.dtype)])
        y = np.concatenate([self.y_train[idx], np.zeros(pad, self.dtype)])
        row_weight = np.concatenate([np.full(len(idx), 1 / len(idx)), np.zeros(pad)])
        return self._tensor(x), self._tensor(y), self._tensor(row_weight)

    def _kernels(self) -> contextlib.AbstractContextManager:
        """Every call that may compile kernels runs inside this: the trainer's `beam` option,
        not the BEAM environment variable, decides how tinygrad optimises them."""
        return self.beam.active()

    def _run(self, batches: list[np.ndarray]) -> None:
        with self._kernels():
            self._run_steps(batches)

    def _run_steps(self, batches: list[np.ndarray]) -> None:
        for idx in batches:
            size = padded_size(len(idx))
            if size not in self._jit_steps:  # a new input shape needs its own jit
                self._jit_steps[size] = TinyJit(self._train_step)
            if self._logged == self.loss_log_size:
                self._read_back_losses()
            step_size, bias2_rsqrt = self.optimizer.next_step_scalars()
            scalars = self._tensor(np.array([step_size, bias2_rsqrt, self._logged]))
            self._jit_steps[size](*self._batch(idx), scalars)
            self._logged += 1

    def run_notes(self) -> dict[str, Any]:
        if self.beam.width == 0:
            return {}
        return {"beam": self.beam.width, "beam_search_s": self.beam.seconds,
                "beam_kernels": self.beam.kernels}

    def _read_back_losses(self) -> None:
        self._host_losses += self.loss_log.numpy()[:self._logged].tolist()
        self._logged = 0

    def min_warmup_steps(self) -> int:
        """TinyJit's first call runs and compiles and its second records the kernels; replays,
        the steady speed, start at the third. Two warm-up steps, so a timed repeat never holds
        the recording call."""
        return 2

    def sync(self) -> None:
        # Device work is queued asynchronously on GPUs; a tiny read of the log waits for it.
        self.loss_log[0].item()

    def losses(self) -> list[float]:
        return self._host_losses + self.loss_log.numpy()[:self._logged].tolist()

    def _predict(self, x: np.ndarray) -> np.ndarray:
        padded = np.zeros((self.predict_chunk, self.cfg.n_columns), self.dtype)  # one shape: one compilation
        padded[:len(x)] = x
        # .numpy() copies out at once: the jit reuses its output buffer on the next call
        with self._kernels():
            return self._jit_forward(self._tensor(padded)).numpy()[:len(x)]

    def _gradients(self, rows: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss = self._loss(*self._batch(rows))  # the step's loss and padding: the step's kernels
        grads = self._grads(loss)
        with self._kernels():
            Tensor.realize(loss, *grads.values())
        return loss.item(), unstack_cells(to_numpy(grads), self.cfg)

    def params(self) -> dict[str, np.ndarray]:
        return unstack_cells(to_numpy(self.params_t), self.cfg)

    def state(self) -> dict[str, np.ndarray]:
        out = {f"param/{k}": v for k, v in self.params().items()}
        for moment, tensors in (("exp_avg", self.optimizer.m), ("exp_avg_sq", self.optimizer.v)):
            out.update({f"{moment}/{k}": v for k, v in unstack_cells(to_numpy(tensors), self.cfg).items()})
        out["step"] = np.array(self.optimizer.steps_taken, dtype=np.int64)
        return out

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        def part(prefix: str) -> dict[str, np.ndarray]:
            named = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(prefix + "/")}
            return stack_cells(named, self.cfg)

        loaded = [(self.params_t, part("param")), (self.optimizer.m, part("exp_avg")),
                  (self.optimizer.v, part("exp_avg_sq"))]
        # assign into the existing buffers: the jit replays kernels bound to exactly these
        Tensor.realize(*[tensors[k].assign(self._tensor(values[k]))
                         for tensors, values in loaded for k in tensors])
        self.optimizer.steps_taken = int(state["step"])


class TinygradBackend(Backend):
    name = "tinygrad"
    devices = tuple(TINYGRAD_DEVICES)
    trainer_class = TinygradTrainer
    options = (
        Option("beam", int, 0, "BEAM search width for every kernel (0: tinygrad's hand-coded "
               "heuristics); searched once, then read from tinygrad's on-disk cache (CACHEDB)", minimum=0),
        PARALLEL_OPTION,
    )

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

    def versions(self) -> dict[str, str]:
        return {"tinygrad": importlib.metadata.version("tinygrad")}
