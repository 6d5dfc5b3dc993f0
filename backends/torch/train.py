"""The torch backend: TorchBackend (devices, dtypes, options) and TorchTrainer, the fast,
device-resident trainer the contract in backends/base.py builds everything on.

Everything (parameters, AdamW moments, the whole training set) lives on the device; a step moves
only the batch's indices there (without blocking the host) and reads nothing back (losses are
fetched lazily). The options are declared once in `TorchBackend.options`; `bench options --backend
torch` lists them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from backends import spec
from backends.base import Backend, Option, Trainer, parallel_option
from backends.spec import TromptConfig
from backends.torch import model, parallel
from backends.torch.device import (
    COMPILE_TIMEOUT_S,
    MATMUL_PRECISIONS,
    OP_TIME_BASIS,
    TIMEOUT_S,
    collective_timeout_s,
    default_threads,
    indices_to,
    legacy_mark_step,
    legacy_xla_device,
    matmul_precision,
    native_bf16,
    pin_matmul_precision,
    preferred_amp,
    profile_ops,
)

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZERS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
SHARED_PARAMS_PREFIX = ("prompt", "tdown.")  # replicated in cell parallelism
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before CUDA-graph capture (torch's advice)


class TorchTrainer(Trainer):
    """Parameters (stacked per cell), AdamW state and the training set resident on the device."""

    def __init__(self, backend: TorchBackend, params: dict[str, np.ndarray], cfg: TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float, weight_decay: float,
                 options: dict[str, Any]) -> None:
        super().__init__(backend, params, cfg, x_train, y_train, lr, weight_decay, options)
        torch.set_num_threads(options["threads"] or default_threads())
        # Join the process group first: under torchrun on GPUs it selects this rank's device.
        self.group = (parallel.single_process() if options["parallel"] == "none" else
                      parallel.init_group(options["parallel"], backend.device, collective_timeout_s(options)))
        self.device, self.dtype = backend.torch_device(), TORCH_DTYPES[backend.dtype]
        pin_matmul_precision(backend.device, options["matmul_precision"])
        if self.group.mode == "cells" and self.group.world > cfg.n_cycles:
            raise ValueError(f"parallel=cells with {self.group.world} ranks needs at least as many cells "
                             f"(n_cycles={cfg.n_cycles})")
        self.cells = self.group.local_cells(cfg.n_cycles)
        self.transposed = model.TRANSPOSED.get(options["variant"], ())
        self.p = {k: nn.Parameter(t) for k, t in model.stack_params(
            params, cfg, self.cells, self.dtype, self.device, self.transposed).items()}
        # Which gradients are summed across ranks, and how: under ddp all of them (by torch's
        # DistributedDataParallel during the backward, or in one flat all-reduce after it), under
        # cells only the replicated ones; the rest stay with their rank.
        self.torch_ddp = self.group.mode == "ddp" and options["ddp_impl"] == "torch"
        self.reduced = [t for k, t in self.p.items() if not self.torch_ddp
                        and (self.group.mode != "cells" or k.startswith(SHARED_PARAMS_PREFIX))]
        self.unreduced = [t for k, t in self.p.items()
                          if self.group.mode == "cells" and not k.startswith(SHARED_PARAMS_PREFIX)]

        self.x_host, self.y_host = x_train, y_train
        if not options["host_loop"]:
            self.x = torch.as_tensor(x_train, dtype=self.dtype).to(self.device)
            self.y = torch.as_tensor(y_train, dtype=self.dtype).to(self.device)

        flavour = dict(OPTIMIZERS[options["optimizer"] or backend.default_optimizer()])
        if options["cuda_graphs"]:
            flavour["capturable"] = True  # step count and lr math on the device, as capture needs
        self.optimizer = torch.optim.AdamW(list(self.p.values()), lr=lr, weight_decay=weight_decay,
                                           betas=spec.BETAS, eps=spec.ADAM_EPS, **flavour)
        self.scaler = torch.amp.GradScaler(self.device.type) if options["amp"] == "fp16" else None
        self.forward = model.VARIANTS[options["variant"]]
        if options["variant"] == "r5-fused":
            from backends.torch import fused

            try:  # the first use on a machine compiles the C++ kernels: here, not in a timed step
                fused.kernels()
            except fused.KernelBuildError as e:
                raise ValueError(str(e)) from None
        self.loss_fn = self._loss
        if options["compile"]:
            # On XLA the default (inductor) would compile for the host; openxla lowers to XLA.
            compile_backend = {"backend": "openxla"} if backend.device == "xla" else {}
            self.loss_fn = torch.compile(self._loss, dynamic=False, **compile_backend)
        self.ddp = None
        if self.torch_ddp:
            # The dead parameters (F7) are detached in every variant: they never get a gradient,
            # so DDP (static_graph) is given only the others; theirs stay zero on every rank.
            trained = [k for k in self.p if k not in model.DETACHED_PARAMS]
            self.ddp = parallel.distributed(parallel.LossModule(self.p, trained, self.loss_fn), self.device)

        self._pending: list[torch.Tensor] = []  # per-step losses still on the device
        self._reducing: list[Any] = []  # ddp_impl=torch: the losses' all-reduces still running
        self._losses: list[float] = []
        self._reset_graph()

    # -- one step ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.options["amp"]:
            return contextlib.nullcontext()
        # Per device type: on XLA tensors only torch.autocast("xla") casts (torch_xla's AMP
        # guide, bf16 on TPU); autocast("cpu") would leave them float32. The weight cache must be
        # off under graph capture (it would hold casts made outside).
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.options["amp"]],
                              cache_enabled=not self.options["cuda_graphs"])

    def _loss(self, p: model.Params, x: torch.Tensor, y: torch.Tensor, denominator: int) -> torch.Tensor:
        with self._autocast():
            pred = self.forward(p, x)
        return model.sum_squared_error(pred.to(self.dtype), y) / denominator

    def _batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.options["host_loop"]:  # the original: index on the host, copy the batch over
            return (torch.as_tensor(self.x_host[rows], dtype=self.dtype).to(self.device),
                    torch.as_tensor(self.y_host[rows], dtype=self.dtype).to(self.device))
        rows_t = indices_to(rows, self.device)
        return self.x[rows_t], self.y[rows_t]

    def _run(self, batches: list[np.ndarray]) -> None:
        for idx in batches:
            if self.options["cuda_graphs"]:
                self._graph_step(idx)
            else:
                self._eager_step(idx)
            if self.backend.device == "xla":
                self.backend.xla_sync()  # cut the lazy graph at the step boundary

    def _accumulate(self, idx: np.ndarray) -> torch.Tensor:
        """The gradients of the global batch `idx`'s loss in every `.grad`, summed over ranks (as
        scaled by the GradScaler, if any), and that loss as a (1,) tensor (under ddp_impl=torch
        still being summed: read it through `_summed`)."""
        rows = self.group.local_rows(idx)
        denominator = len(idx) * self.cfg.n_cycles  # the GLOBAL B·N: rank losses add up
        # Across ranks and under CUDA graphs the gradients stay allocated (zeroed, not freed): a
        # rank with an empty slice still contributes zeros, captured graphs keep pointing at the
        # same buffers, and under DDP they are views into its buckets. A single process without
        # graphs frees them instead, so that backward hands each parameter its new gradient
        # rather than adding it to zeros (0 + g is g exactly: the same numbers, one pass less).
        self.optimizer.zero_grad(set_to_none=self.group.world == 1 and not self.options["cuda_graphs"])
        if self.ddp is not None:
            # DDP's reducer waits for every rank's backward: a rank whose slice is empty runs one
            # row at weight zero, which adds exact zeros to the sums.
            loss = self.ddp(*self._batch(rows if len(rows) else idx[:1]), denominator)
            if not len(rows):
                loss = loss * 0.0
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss = loss.detach().reshape(1).clone()
            self._reducing.append(self.group.all_reduce_sum_async(loss))
        elif len(rows):
            loss = self.loss_fn(self.p, *self._batch(rows), denominator)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss = loss.detach().reshape(1).clone()
        else:
            loss = torch.zeros(1, dtype=self.dtype, device=self.device)
        for t in self.p.values():  # first step; and the dead parameters (F7) never get one otherwise
            if t.grad is None:
                t.grad = torch.zeros_like(t)
        if self.ddp is None:
            # With a GradScaler, the ranks must agree on skipping a step (see all_reduce_sum_).
            self.group.all_reduce_sum_([t.grad for t in self.reduced] + [loss],
                                       unreduced=[t.grad for t in self.unreduced] if self.scaler else [])
        return loss

    def _summed(self) -> None:
        """Wait for the losses' all-reduces (ddp_impl=torch) before reading them."""
        for work in self._reducing:
            if work is not None:
                work.wait()
        self._reducing = []

    def _eager_step(self, idx: np.ndarray) -> None:
        loss = self._accumulate(idx)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self._record(loss)

    op_time_basis = OP_TIME_BASIS

    def op_times(self, batches: Sequence[np.ndarray]) -> list[tuple[str, float, int]] | None:
        """torch.profiler's self time per op (device.profile_ops). A compiled CPU step would show
        each graph as one op, so the loss is first recompiled with inductor's per-kernel profiling
        on, by training once more on the first batch (not profiled): its generated kernels then
        appear by name (cpp_fused_...). None on XLA, whose ops run inside XLA's graph."""
        if self.backend.device == "xla":
            return None
        if self.options["compile"] and self.backend.device == "cpu":
            import torch._inductor.config as inductor_config

            torch._dynamo.reset()  # compiled code is cached per code object: drop it
            with inductor_config.patch({"cpp.enable_kernel_profile": True}):
                self.run(batches[:1])
                self.sync()
        return profile_ops(self, batches, self.device.type)

    def min_warmup_steps(self) -> int:
        """With cuda_graphs: the eager warm-up steps, the last of which ends with the capture, and
        the first replay (its first launch uploads the graph), so that a timed region starts on
        the steady replays."""
        return GRAPH_WARMUP_STEPS + 1 if self.options["cuda_graphs"] else 1

    def _graph_step(self, idx: np.ndarray) -> None:
        """Whole-step CUDA graph for batches of the captured size; other sizes run eagerly. The
        warm-up steps are real training steps and the capture at the end of the last of them
        computes nothing (the next step's replay does), so the trajectory is the one without
        graphs. The graph has the size of that last warm-up batch (a full one in bench)."""
        if self._graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._eager_step(idx)
            torch.cuda.current_stream().wait_stream(side)
            self._eager_steps += 1
            if self._eager_steps == GRAPH_WARMUP_STEPS:
                self._capture(len(idx))
            return
        if len(idx) != self._graph_io["idx"].numel():
            self._eager_step(idx)
            return
        # From page-locked memory, so that the copy does not block the host (see `indices_to`).
        self._graph_io["idx"].copy_(torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).pin_memory(),
                                    non_blocking=True)
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

    def _reset_graph(self) -> None:
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_io: dict[str, torch.Tensor] = {}
        self._eager_steps = 0

    def _record(self, loss: torch.Tensor) -> None:
        self._pending.append(loss)
        if self.options["host_loop"]:
            self._fetch_losses()  # the original reads loss.item() every step

    def _fetch_losses(self) -> None:
        self._summed()
        if self._pending:
            # To the host first: XLA devices (TPU) have no float64.
            self._losses += torch.cat(self._pending).cpu().double().tolist()
            self._pending = []

    # -- the rest of the Trainer API -----------------------------------------------------------
    def sync(self) -> None:
        self.backend.synchronize()

    def losses(self) -> list[float]:
        self._fetch_losses()
        return list(self._losses)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        """Collective under parallel=cells: every rank predicts its own cells."""
        x_t = torch.as_tensor(x, dtype=self.dtype).to(self.device)
        with torch.no_grad(), self._autocast():
            local = self.forward(self.p, x_t).to(self.dtype).cpu().numpy()
        if self.group.mode != "cells":
            return local
        return np.concatenate(self.group.gather(local), axis=1)  # ranks own consecutive cells

    def _gradients(self, rows: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """The training step's own loss function and reduction without the optimizer step
        (collective under ddp and cells, like a step)."""
        loss = self._accumulate(rows)
        self._summed()
        scale = self.scaler.get_scale() if self.scaler else 1.0
        grads = self._gathered(model.unstack({k: t.grad / scale for k, t in self.p.items()},
                                             self.cfg, self.cells, self.transposed))
        self.optimizer.zero_grad(set_to_none=False)
        return float(loss.item()), grads

    def params(self) -> dict[str, np.ndarray]:
        """Canonical numpy parameters (collective under parallel=cells)."""
        return self._gathered(model.unstack(self.p, self.cfg, self.cells, self.transposed))

    def peak_memory_mb(self) -> float | None:
        if self.backend.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return None

    def agree_max(self, value: float) -> float:
        if self.group.world == 1:
            return value
        return self.group.all_reduce_max(value)

    # -- checkpoints: canonical names, numpy (see Trainer.state) -------------------------------
    def _gathered(self, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every rank's cells merged (collective under cells), in canonical order."""
        if self.group.mode != "cells":
            return local
        merged: dict[str, np.ndarray] = {}
        for part in self.group.gather(local):
            merged.update(part)
        return {k: merged[k] for k in spec.param_names(self.cfg)}

    def state(self) -> dict[str, np.ndarray]:
        """Parameters and AdamW moments unstacked to canonical names (collective under cells)."""
        opt_state = [self.optimizer.state.get(t, {}) for t in self.p.values()]
        tensors = {"param": self.p}
        for moment in ("exp_avg", "exp_avg_sq"):
            tensors[moment] = {k: st.get(moment, torch.zeros_like(t))
                               for (k, t), st in zip(self.p.items(), opt_state)}
        out: dict[str, np.ndarray] = {}
        for prefix, stacked in tensors.items():
            canonical = self._gathered(model.unstack(stacked, self.cfg, self.cells, self.transposed))
            out.update({f"{prefix}/{k}": v for k, v in canonical.items()})
        out["step"] = np.array(int(opt_state[0].get("step", 0)), dtype=np.int64)
        return out

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        def stacked(prefix: str) -> model.Params:
            canonical = {k: state[f"{prefix}/{k}"] for k in spec.param_names(self.cfg)}
            return model.stack_params(canonical, self.cfg, self.cells, self.dtype, self.device,
                                      self.transposed)

        with torch.no_grad():
            for name, value in stacked("param").items():
                self.p[name].copy_(value)
        step = int(state["step"])
        exp_avg, exp_avg_sq = stacked("exp_avg"), stacked("exp_avg_sq")
        saved = self.optimizer.state_dict()
        # torch's AdamW keeps no state before its first step. load_state_dict puts `step` where this
        # flavour keeps it (the device when fused or capturable) and the moments beside each parameter.
        saved["state"] = {} if step == 0 else {
            i: {"step": torch.tensor(float(step)), "exp_avg": exp_avg[name], "exp_avg_sq": exp_avg_sq[name]}
            for i, name in enumerate(self.p)}
        self.optimizer.load_state_dict(saved)
        self._reset_graph()  # a captured graph points at the optimizer state tensors just replaced


class TorchBackend(Backend):
    """PyTorch on the CPU, a CUDA GPU or an XLA device (torch_xla, in its own environment)."""

    name = "torch"
    devices = ("cpu", "cuda", "xla")
    trainer_class = TorchTrainer
    options = (
        Option("variant", str, "r5", "which rewrite of model.py runs (r5 is the fastest)",
               choices=tuple(model.VARIANTS)),
        Option("optimizer", str, None, "torch.optim.AdamW implementation, all the same update "
               "(none: fused, or default on xla)", choices=tuple(OPTIMIZERS), nullable=True),
        Option("compile", bool, False, "torch.compile the loss (forward + backward via AOTAutograd)"),
        Option("amp", str, None, "autocast to bf16 or fp16 (fp16 adds a GradScaler, needs cuda; "
               "bf16 on cuda needs compute capability 8.0)", choices=tuple(AMP_DTYPES), nullable=True,
               exact=(None,)),
        Option("matmul_precision", str, "ieee", "float32 matmuls in float32 (ieee) or on TF32 tensor "
               "cores (tf32: cuda, float32)", choices=tuple(MATMUL_PRECISIONS), exact=("ieee",)),
        Option("cuda_graphs", bool, False, "capture the whole step (forward, backward, fused AdamW) "
               "in one CUDA graph"),
        parallel_option(*parallel.MODES),
        Option("ddp_impl", str, "torch", "parallel=ddp through torch's DistributedDataParallel (bucketed "
               "all-reduce overlapping the backward) or one flat all-reduce after the backward",
               choices=parallel.DDP_IMPLS),
        Option("host_loop", bool, False, "the original loop: copy each batch from the host and read "
               "the loss back every step"),
        Option("threads", int, None, "torch.set_num_threads (none: $OMP_NUM_THREADS, else all cores)",
               minimum=1, nullable=True),
        Option("timeout_s", float, None, f"seconds a collective waits for a dead peer (> 0; parallel only; "
               f"none: {TIMEOUT_S:g}, or {COMPILE_TIMEOUT_S:g} with compile=true)", nullable=True),
    )

    def preferred_amp(self) -> str:
        """The amp value that runs natively here: bf16, or fp16 on a CUDA GPU without bf16."""
        return preferred_amp(self.device)

    def _check_device_present(self) -> None:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA GPU")
        if self.device == "xla":
            try:
                import torch_xla  # noqa: F401
            except ImportError:
                raise ValueError("device 'xla' needs torch_xla, which pins torch==2.9.0: make a separate "
                                 "venv and run pip install -e .[xla] there (see docs/REPORT.md)") from None

    def _check_options(self, opts: dict[str, Any]) -> None:
        if opts["variant"] == "r5-fused" and self.device != "cpu":
            raise ValueError(f"variant r5-fused runs on the CPU only (C++ CPU kernels), not on {self.device}")
        if opts["amp"] and self.dtype != "float32":
            raise ValueError(f"amp={opts['amp']} needs dtype float32 (autocast lowers float32 ops), "
                             f"not {self.dtype}")
        if opts["amp"] == "fp16" and self.device != "cuda":
            raise ValueError("amp=fp16 needs a CUDA device (GradScaler); use amp=bf16 on cpu")
        if opts["amp"] == "bf16" and self.device == "cuda" and not native_bf16():
            raise ValueError("amp=bf16 needs compute capability >= 8.0 (this GPU only emulates bf16); "
                             "use amp=fp16")
        if opts["matmul_precision"] == "tf32" and (self.device != "cuda" or self.dtype != "float32"):
            raise ValueError(f"matmul_precision=tf32 needs device cuda and dtype float32, not {self.device} "
                             f"{self.dtype}")
        if opts["cuda_graphs"] and self.device != "cuda":
            raise ValueError("cuda_graphs=true needs device cuda")
        if opts["cuda_graphs"] and (opts["amp"] == "fp16" or opts["parallel"] != "none" or opts["host_loop"]):
            raise ValueError("cuda_graphs=true cannot be combined with amp=fp16, parallel or host_loop "
                             "(each needs the host inside the step)")
        if opts["optimizer"] == "fused" and self.device == "xla":
            raise ValueError("optimizer=fused is not available on xla; use default or foreach")
        if opts["parallel"] != "none" and self.device not in ("cpu", "cuda"):
            raise ValueError(f"parallel={opts['parallel']} supports devices cpu (gloo) and cuda (nccl), "
                             f"not {self.device}")
        if opts["timeout_s"] is not None and opts["timeout_s"] <= 0:
            raise ValueError(f"option timeout_s must be > 0, got {opts['timeout_s']!r}")

    def default_optimizer(self) -> str:
        """The AdamW flavour of optimizer=none: fused where torch has it (cpu, cuda)."""
        return "default" if self.device == "xla" else "fused"

    def torch_device(self) -> torch.device:
        if self.device == "xla":
            import torch_xla

            return torch_xla.device() if hasattr(torch_xla, "device") else legacy_xla_device()
        return torch.device(self.device)

    def xla_sync(self) -> None:
        import torch_xla

        torch_xla.sync() if hasattr(torch_xla, "sync") else legacy_mark_step()

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        elif self.device == "xla":
            import torch_xla.core.xla_model as xm

            self.xla_sync()
            xm.wait_device_ops()

    def device_name(self) -> str:
        if self.device == "cuda":
            return torch.cuda.get_device_name()
        if self.device == "xla":
            return f"XLA ({os.environ.get('PJRT_DEVICE', 'default PJRT device')})"
        return super().device_name()

    def versions(self) -> dict[str, str]:
        """Library versions, and the float32 matmul precision in force (set by the trainer)."""
        out = {"torch": torch.__version__, "threads": str(torch.get_num_threads()),
               "matmul_precision": matmul_precision(self.device)}
        if self.device == "cuda":
            out["cuda"] = str(torch.version.cuda)
        if self.device == "xla":
            import torch_xla

            out["torch_xla"] = torch_xla.__version__
        return out
