"""What the torch backend needs to know and set about its device, apart from training: threads,
native bf16, float32 matmul precision (TF32, XLA's levels), index copies that do not block the
host, collective timeouts, the torch_xla spellings of older releases, and torch.profiler's
per-op times."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

TIMEOUT_S = 60.0  # collectives without a peer fail after this (timeout_s=none) ...
COMPILE_TIMEOUT_S = 1800.0  # ... or this with compile=true (see `collective_timeout_s`)
MATMUL_PRECISIONS = {"ieee": "highest", "tf32": "high"}  # torch.set_float32_matmul_precision's names


def default_threads() -> int:
    """The cores this process may run on (its CPU mask, which `taskset` or `bench time --cores`
    narrow), unless OMP_NUM_THREADS says otherwise (the test suite sets it to 1)."""
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)) or 1)


def native_bf16() -> bool:
    """Whether this CUDA GPU has bf16 arithmetic (compute capability 8.0, Ampere, and later).
    torch.cuda.is_bf16_supported() also says yes on older GPUs such as the T4 (7.5), where bf16
    is emulated and slower than float32."""
    return torch.cuda.get_device_capability() >= (8, 0)


def preferred_amp(device: str) -> str:
    """The autocast dtype to use for amp on `device`: bf16, except fp16 (with a GradScaler) on a
    CUDA GPU without native bf16."""
    return "fp16" if device == "cuda" and not native_bf16() else "bf16"


def collective_timeout_s(options: dict[str, Any]) -> float:
    """Seconds a collective waits for a peer. The process group has one timeout for its whole
    life, and with compile=true each rank compiles inside its first step, at its own speed, before
    the first all-reduce: a minute can pass between the first and the last rank arriving. So
    timeout_s=none means TIMEOUT_S, or COMPILE_TIMEOUT_S with compile=true (a dead peer is then
    noticed later; set timeout_s to choose)."""
    if options["timeout_s"] is not None:
        return options["timeout_s"]
    return COMPILE_TIMEOUT_S if options["compile"] else TIMEOUT_S


def pin_matmul_precision(device: str, precision: str) -> None:
    """Fix how float32 matmuls round, process-wide: "ieee" is float32 arithmetic, "tf32" lets CUDA
    round their inputs to TensorFloat-32 (10 mantissa bits) on tensor cores (Ampere and later).
    set_float32_matmul_precision is torch's documented switch that keeps its legacy and newer TF32
    flags consistent (in torch 2.13, setting only torch.backends.cuda.matmul.fp32_precision="tf32"
    makes torch.get_float32_matmul_precision() raise, which inductor calls); cuDNN's own flag
    only matters for convolutions and RNNs, pinned the same way for completeness. On XLA the same
    question is torch_xla's mat-mul precision: "highest" is float32 on a TPU (the default there is
    one bf16 pass)."""
    if device == "xla":
        import torch_xla.backends

        torch_xla.backends.set_mat_mul_precision("highest")
        return
    torch.set_float32_matmul_precision(MATMUL_PRECISIONS[precision])
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


def matmul_precision(device: str) -> str:
    """The float32 matmul precision in force now: "ieee" or "tf32" (XLA: its own level's name)."""
    if device == "xla":
        import torch_xla.backends

        level = torch_xla.backends.get_mat_mul_precision()
        return "ieee" if level == "highest" else f"xla-{level}"
    named = {v: k for k, v in MATMUL_PRECISIONS.items()}
    current = torch.get_float32_matmul_precision()
    return named.get(current, current)


def indices_to(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """int64 row indices on `device`. To a GPU through page-locked memory with non_blocking=True:
    from pageable memory the copy would block the host every step (torch's "A guide on good usage
    of non_blocking and pin_memory()"). The caching host allocator that pin_memory() draws from
    keeps each block until the copy that reads it has finished, so a block is never overwritten
    under a copy still queued."""
    host = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def legacy_xla_device() -> torch.device:  # torch_xla < 2.9 (e.g. Kaggle's 2.8)
    import torch_xla.core.xla_model as xm

    return xm.xla_device()


def legacy_mark_step() -> None:
    import torch_xla.core.xla_model as xm

    xm.mark_step()


# What profile_ops's seconds are (a trainer's `op_time_basis`).
OP_TIME_BASIS = "self time on the calling thread; device time on a GPU"


def profile_ops(trainer: Any, batches: Sequence[np.ndarray], device_type: str
                ) -> list[tuple[str, float, int]]:
    """Train `trainer` (anything with `run` and `sync`) on `batches` under torch.profiler; per op
    (name, self seconds, calls), most expensive first. Self time excludes the ops an op calls. On
    the CPU it is the calling thread's wall time (torch's intra-op threads work inside it); on a
    GPU the device time of the op's kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    with profile(activities=activities) as prof:
        trainer.run(list(batches))
        trainer.sync()
    attr = "self_device_time_total" if device_type == "cuda" else "self_cpu_time_total"
    ops = [(e.key, getattr(e, attr) / 1e6, e.count) for e in prof.key_averages()]
    return sorted((op for op in ops if op[1] > 0), key=lambda op: -op[1])
