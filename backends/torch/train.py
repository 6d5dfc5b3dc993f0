"""The torch backend: the numpy checking surface and the fast, device-resident Trainer.

Trainer options (bench passes them as `--opt key=value`; unknown ones are a ValueError):

    variant      "r2" | "r3" | "r4" | "r5"   which rewrite of model.py (default r5, the fastest)
    optimizer    "default" | "foreach" | "fused"   torch.optim.AdamW implementation (default fused;
                 xla: default). All three compute the same update (trompt_spec.md §6).
    compile      bool    torch.compile the loss (forward + backward through AOTAutograd)
    amp          None | "bf16" | "fp16"   autocast; fp16 adds a GradScaler and needs CUDA.
                 Not exact: bench labels it "AMP" and reports its deviation.
    cuda_graphs  bool    capture the whole step (forward, backward, fused AdamW) in one CUDA graph
    parallel     None | "ddp" | "cells"   multi-process (see parallel.py; needs torchrun)
    host_loop    bool    the original's loop shape: copy each batch from host memory and read the
                 loss back every step (the ladder's baseline for "trainer on device")
    threads      int     torch.set_num_threads (default: $OMP_NUM_THREADS, else all cores)
    timeout_s    float   how long a collective waits for a dead peer (parallel only)

Everything else (parameters, AdamW moments, the whole training set) lives on the device; a step
moves only the batch's indices there and reads nothing back (losses are fetched lazily).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch

from backends import spec
from backends.base import Backend, Trainer, batches_as_rows, check_state
from backends.spec import TromptConfig
from backends.torch import model, parallel

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SHARED_PARAMS_PREFIX = ("prompt", "tdown.")  # replicated in cell parallelism
PREDICT_CHUNK = 64  # rows per inference chunk: H for 64 rows at full size is ~190 MB in fp32
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before CUDA-graph capture (torch's advice)

DEFAULT_OPTIONS: dict[str, Any] = {
    "variant": "r5",
    "optimizer": None,  # resolved per device: fused on cpu/cuda, the default loop on xla
    "compile": False,
    "amp": None,
    "cuda_graphs": False,
    "parallel": None,
    "host_loop": False,
    "threads": None,
    "timeout_s": 60.0,
}


def _none_if_blank(value: Any) -> Any:
    """`--opt amp=none` arrives as the string 'none'; treat it as None."""
    return None if isinstance(value, str) and value.lower() in ("none", "") else value


def check_options(options: dict[str, Any], device: str, dtype: str) -> dict[str, Any]:
    """Merge with the defaults and reject unknown or contradictory options with one line."""
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown torch trainer option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **{k: _none_if_blank(v) for k, v in options.items()}}
    if opts["optimizer"] is None:
        opts["optimizer"] = "default" if device == "xla" else "fused"
    choices = {"variant": tuple(model.VARIANTS), "optimizer": ("default", "foreach", "fused"),
               "amp": (None, "bf16", "fp16"), "parallel": (None, *parallel.MODES)}
    for key, allowed in choices.items():
        if opts[key] not in allowed:
            raise ValueError(f"option {key}={opts[key]!r} is not one of {', '.join(map(str, allowed))}")
    for key in ("compile", "cuda_graphs", "host_loop"):
        if not isinstance(opts[key], bool):
            raise ValueError(f"option {key} must be true or false, got {opts[key]!r}")
    if opts["amp"] and dtype != "float32":
        raise ValueError(f"amp={opts['amp']} needs dtype float32 (autocast lowers float32 ops), not {dtype}")
    if opts["amp"] == "fp16" and device != "cuda":
        raise ValueError("amp=fp16 needs a CUDA device (GradScaler); use amp=bf16 on cpu")
    if opts["cuda_graphs"] and device != "cuda":
        raise ValueError("cuda_graphs=true needs device cuda")
    if opts["cuda_graphs"] and (opts["amp"] == "fp16" or opts["parallel"] or opts["host_loop"]):
        raise ValueError("cuda_graphs=true cannot be combined with amp=fp16, parallel or host_loop "
                         "(each needs the host inside the step)")
    if opts["optimizer"] == "fused" and device == "xla":
        raise ValueError("optimizer=fused is not available on xla; use default or foreach")
    threads = opts["threads"]
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"option threads must be a positive int, got {threads!r}")
    return opts


def default_threads() -> int:
    """All cores, unless OMP_NUM_THREADS says otherwise (the test suite sets it to 1)."""
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


class TorchTrainer(Trainer):
    """Parameters (stacked per cell), AdamW state and the training set resident on the device."""

    def __init__(self, backend: TorchBackend, params: dict[str, np.ndarray], cfg: TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float = spec.LR,
                 weight_decay: float = spec.WEIGHT_DECAY, **options: Any) -> None:
        opts = check_options(options, backend.device, backend.dtype)
        self.backend, self.cfg, self.options = backend, cfg, opts
        self.lr, self.weight_decay = lr, weight_decay
        torch.set_num_threads(opts["threads"] or default_threads())
        # Join the process group first: under torchrun on GPUs it selects this rank's device.
        self.group = (parallel.init_group(opts["parallel"], backend.device, opts["timeout_s"])
                      if opts["parallel"] else parallel.single_process())
        self.device, self.dtype = backend.torch_device(), TORCH_DTYPES[backend.dtype]
        if self.group.mode == "cells" and self.group.world > cfg.n_cycles:
            raise ValueError(f"parallel=cells with {self.group.world} ranks needs at least as many cells "
                             f"(n_cycles={cfg.n_cycles})")
        self.cells = self.group.local_cells(cfg.n_cycles)
        self.p = model.stack_params(params, cfg, self.cells, self.dtype, self.device)
        for tensor in self.p.values():
            tensor.requires_grad_(True)
        # The gradients summed across ranks: all of them (ddp) or only the replicated ones (cells).
        self.reduced = [t for k, t in self.p.items()
                        if self.group.mode != "cells" or k.startswith(SHARED_PARAMS_PREFIX)]

        self.x_host, self.y_host = x_train, y_train
        if not opts["host_loop"]:
            self.x = torch.as_tensor(x_train, dtype=self.dtype).to(self.device)
            self.y = torch.as_tensor(y_train, dtype=self.dtype).to(self.device)

        flavour = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[opts["optimizer"]]
        if opts["cuda_graphs"]:
            flavour["capturable"] = True  # step count and lr math on the device, as capture needs
        self.optimizer = torch.optim.AdamW(list(self.p.values()), lr=lr, weight_decay=weight_decay,
                                           betas=spec.BETAS, eps=spec.ADAM_EPS, **flavour)
        self.scaler = torch.amp.GradScaler("cuda") if opts["amp"] == "fp16" else None
        self.forward = model.VARIANTS[opts["variant"]]
        self.loss_fn = torch.compile(self._loss, dynamic=False) if opts["compile"] else self._loss

        self._pending: list[torch.Tensor] = []  # per-step losses still on the device
        self._losses: list[float] = []
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_io: dict[str, torch.Tensor] = {}
        self._eager_steps = 0

    # -- one step ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.options["amp"]:
            return contextlib.nullcontext()
        device_type = "cuda" if self.backend.device == "cuda" else "cpu"
        # The weight cache must be off under graph capture (it would hold casts made outside).
        return torch.autocast(device_type, dtype=AMP_DTYPES[self.options["amp"]],
                              cache_enabled=not self.options["cuda_graphs"])

    def _loss(self, p: model.Params, x: torch.Tensor, y: torch.Tensor, denominator: int) -> torch.Tensor:
        with self._autocast():
            pred = self.forward(p, x)
        return model.sum_squared_error(pred.to(self.dtype), y) / denominator

    def _batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.options["host_loop"]:  # the original: index on the host, copy the batch over
            return (torch.as_tensor(self.x_host[rows], dtype=self.dtype).to(self.device),
                    torch.as_tensor(self.y_host[rows], dtype=self.dtype).to(self.device))
        rows_t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)).to(self.device)
        return self.x[rows_t], self.y[rows_t]

    def step(self, idx: np.ndarray) -> None:
        idx = np.asarray(idx)
        if idx.ndim != 1 or len(idx) == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"a training step needs a non-empty 1-D array of row indices, got {idx!r:.60}")
        if idx.min() < 0 or idx.max() >= len(self.x_host):
            raise ValueError(f"row index out of range [0, {len(self.x_host)}) in this batch")
        if self.options["cuda_graphs"]:
            self._graph_step(idx)
        else:
            self._eager_step(idx)
        if self.backend.device == "xla":
            self.backend.xla_sync()  # cut the lazy graph at the step boundary

    def _eager_step(self, idx: np.ndarray) -> None:
        rows = self.group.local_rows(idx)
        denominator = len(idx) * self.cfg.n_cycles  # the GLOBAL B·N: rank losses add up
        # Gradients stay allocated (zeroed, not freed): a rank with an empty slice still
        # contributes zeros, and captured CUDA graphs keep pointing at the same buffers.
        self.optimizer.zero_grad(set_to_none=False)
        if len(rows):
            loss = self.loss_fn(self.p, *self._batch(rows), denominator)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss = loss.detach().reshape(1).clone()
        else:
            loss = torch.zeros(1, dtype=self.dtype, device=self.device)
        for t in self.p.values():  # first step; and the dead parameters (F7) never get one otherwise
            if t.grad is None:
                t.grad = torch.zeros_like(t)
        self.group.all_reduce_sum_([t.grad for t in self.reduced] + [loss])
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self._record(loss)

    def _graph_step(self, idx: np.ndarray) -> None:
        """Whole-step CUDA graph for full batches of the captured size; other sizes run eagerly.
        The warm-up steps are real training steps (capture itself computes nothing, the replay
        right after it does), so the trajectory is the same as without graphs."""
        size = self._graph_io["idx"].numel() if self._graph_io else None
        if self._graph is None and self._eager_steps < GRAPH_WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._eager_step(idx)
            torch.cuda.current_stream().wait_stream(side)
            self._eager_steps += 1
            return
        if self._graph is None:
            self._capture(len(idx))
            size = len(idx)
        if len(idx) != size:
            self._eager_step(idx)
            return
        self._graph_io["idx"].copy_(torch.from_numpy(np.asarray(idx, dtype=np.int64)), non_blocking=True)
        self._graph.replay()
        self._record(self._graph_io["loss"].detach().reshape(1).clone())

    def _capture(self, batch_size: int) -> None:
        io = {"idx": torch.zeros(batch_size, dtype=torch.int64, device=self.device)}
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.optimizer.zero_grad(set_to_none=False)
            rows = io["idx"]
            io["loss"] = self.loss_fn(self.p, self.x[rows], self.y[rows], batch_size * self.cfg.n_cycles)
            io["loss"].backward()
            self.optimizer.step()
        self._graph, self._graph_io = graph, io

    def _record(self, loss: torch.Tensor) -> None:
        self._pending.append(loss)
        if self.options["host_loop"]:
            self._fetch_losses()  # the original reads loss.item() every step

    def _fetch_losses(self) -> None:
        if self._pending:
            self._losses += torch.cat(self._pending).double().cpu().tolist()
            self._pending = []

    # -- the rest of the Trainer API -----------------------------------------------------------
    def sync(self) -> None:
        self.backend.synchronize()

    def losses(self) -> list[float]:
        self._fetch_losses()
        return list(self._losses)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(B, N) with the current parameters (collective under parallel=cells)."""
        spec.check_x(x, self.cfg)
        x_t = torch.as_tensor(np.asarray(x), dtype=self.dtype).to(self.device)
        with torch.no_grad(), self._autocast():
            local = torch.cat([self.forward(self.p, x_t[i:i + PREDICT_CHUNK]).to(self.dtype)
                               for i in range(0, len(x_t), PREDICT_CHUNK)])
        local = local.cpu().numpy()
        if self.group.mode != "cells":
            return local
        return np.concatenate(self.group.gather(local), axis=1)  # ranks own consecutive cells

    def params(self) -> dict[str, np.ndarray]:
        """Canonical numpy parameters (collective under parallel=cells)."""
        local = model.unstack(self.p, self.cfg, self.cells)
        if self.group.mode != "cells":
            return local
        merged: dict[str, np.ndarray] = {}
        for part in self.group.gather(local):
            merged.update(part)
        return {k: merged[k] for k in spec.param_names(self.cfg)}

    def peak_memory_mb(self) -> float | None:
        if self.backend.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return None

    def optimizer_state(self) -> dict:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    def agree_max(self, value: float) -> float:
        if self.group.world == 1:
            return value
        return self.group.all_reduce_max(value)

    # -- checkpoints: canonical names, numpy (see Trainer.state) -------------------------------
    def _gathered(self, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.group.mode != "cells":
            return local
        merged: dict[str, np.ndarray] = {}
        for part in self.group.gather(local):
            merged.update(part)
        return merged

    def state(self) -> dict[str, np.ndarray]:
        """Parameters and AdamW moments unstacked to canonical names (collective under cells)."""
        opt_state = [self.optimizer.state.get(t, {}) for t in self.p.values()]
        tensors = {"param": self.p}
        for moment in ("exp_avg", "exp_avg_sq"):
            tensors[moment] = {k: st.get(moment, torch.zeros_like(t))
                               for (k, t), st in zip(self.p.items(), opt_state)}
        out: dict[str, np.ndarray] = {}
        for prefix, stacked in tensors.items():
            canonical = self._gathered(model.unstack(stacked, self.cfg, self.cells))
            out.update({f"{prefix}/{k}": v for k, v in canonical.items()})
        out["step"] = np.array(int(opt_state[0].get("step", 0)), dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, self.cfg)

        def stacked(prefix: str) -> model.Params:
            canonical = {k: state[f"{prefix}/{k}"] for k in spec.param_names(self.cfg)}
            return model.stack_params(canonical, self.cfg, self.cells, self.dtype, self.device)

        with torch.no_grad():
            for name, value in stacked("param").items():
                self.p[name].copy_(value)
        if int(state["step"]) == 0:
            return
        exp_avg, exp_avg_sq = stacked("exp_avg"), stacked("exp_avg_sq")
        saved = self.optimizer.state_dict()
        # load_state_dict moves `step` where this AdamW flavour keeps it (the device when fused).
        saved["state"] = {i: {"step": torch.tensor(float(state["step"])), "exp_avg": exp_avg[name],
                              "exp_avg_sq": exp_avg_sq[name]} for i, name in enumerate(self.p)}
        self.optimizer.load_state_dict(saved)


class TorchBackend(Backend):
    name = "torch"
    devices = ("cpu", "cuda", "xla")
    trainer_class = TorchTrainer

    def __init__(self, device: str = "cpu", dtype: str = "float32", variant: str = "r5") -> None:
        if variant not in model.VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(model.VARIANTS)}")
        self.variant = variant
        super().__init__(device=device, dtype=dtype)

    def _check_device_present(self) -> None:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA GPU")
        if self.device == "xla":
            try:
                import torch_xla  # noqa: F401
            except ImportError:
                raise ValueError("device 'xla' needs torch_xla, which pins torch==2.9.0: make a separate "
                                 "venv and run pip install -e .[xla] there (see docs/REPORT.md)") from None

    def torch_device(self) -> torch.device:
        if self.device == "xla":
            import torch_xla

            return torch_xla.device() if hasattr(torch_xla, "device") else _legacy_xla_device()
        return torch.device(self.device)

    def xla_sync(self) -> None:
        import torch_xla

        torch_xla.sync() if hasattr(torch_xla, "sync") else _legacy_mark_step()

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        elif self.device == "xla":
            import torch_xla.core.xla_model as xm

            self.xla_sync()
            xm.wait_device_ops()

    # -- the numpy checking surface ------------------------------------------------------------
    def _stacked(self, params: dict[str, np.ndarray], cfg: TromptConfig, requires_grad: bool) -> model.Params:
        p = model.stack_params(params, cfg, dtype=TORCH_DTYPES[self.dtype], device=self.torch_device())
        return {k: v.requires_grad_(requires_grad) for k, v in p.items()}

    def _forward(self, params: dict[str, np.ndarray], x: np.ndarray, cfg: TromptConfig) -> np.ndarray:
        p = self._stacked(params, cfg, requires_grad=False)
        x_t = torch.as_tensor(x).to(self.torch_device())
        forward = model.VARIANTS[self.variant]
        with torch.no_grad():
            return torch.cat([forward(p, x_t[i:i + PREDICT_CHUNK])
                              for i in range(0, len(x_t), PREDICT_CHUNK)]).cpu().numpy()

    def _loss_and_grad(self, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                       cfg: TromptConfig) -> tuple[float, dict[str, np.ndarray]]:
        p = self._stacked(params, cfg, requires_grad=True)
        device = self.torch_device()
        pred = model.VARIANTS[self.variant](p, torch.as_tensor(x).to(device))
        loss = model.sum_squared_error(pred, torch.as_tensor(y).to(device)) / pred.numel()
        loss.backward()
        grads = {k: torch.zeros_like(v) if v.grad is None else v.grad for k, v in p.items()}  # F7
        return loss.item(), model.unstack(grads, cfg)

    def train_steps(self, params: dict[str, np.ndarray], batches: list, cfg: TromptConfig,
                    lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                    state: dict | None = None) -> tuple[dict[str, np.ndarray], list[float]]:
        """torch.optim.AdamW (the trainer's default, fused) instead of the numpy yardstick; the
        optimizer state carries over between calls through `state`."""
        x_all, y_all, rows = batches_as_rows(batches, cfg)
        trainer = self.trainer(params, cfg, x_all, y_all, lr, weight_decay, variant=self.variant)
        if state and "torch_optimizer" in state:
            trainer.load_optimizer_state(state["torch_optimizer"])
        for idx in rows:
            trainer.step(idx)
        if state is not None:
            state["torch_optimizer"] = trainer.optimizer_state()
        return trainer.params(), trainer.losses()

    def device_name(self) -> str:
        if self.device == "cuda":
            return torch.cuda.get_device_name()
        if self.device == "xla":
            return f"XLA ({os.environ.get('PJRT_DEVICE', 'default PJRT device')})"
        return super().device_name()

    def versions(self) -> dict[str, str]:
        out = {"torch": torch.__version__, "threads": str(torch.get_num_threads())}
        if self.device == "cuda":
            out["cuda"] = str(torch.version.cuda)
        if self.device == "xla":
            import torch_xla

            out["torch_xla"] = torch_xla.__version__
        return out


def _legacy_xla_device() -> torch.device:  # torch_xla < 2.9 (e.g. Kaggle's 2.8)
    import torch_xla.core.xla_model as xm

    return xm.xla_device()


def _legacy_mark_step() -> None:
    import torch_xla.core.xla_model as xm

    xm.mark_step()
