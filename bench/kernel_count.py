"""Count the kernels of a torch computation: what `bench roofline` prices (its docstring and
docs/REPORT.md, "Accelerators on paper", say how the estimate is made).

`count(fn)` runs `fn()` under `OpCounter`, a TorchDispatchMode that sees every aten op. In eager
mode each op that moves data is one kernel launch; views, allocations, `_unsafe_view` and `.item()`
reads move nothing and are not counted. Per kernel: its class (matmul; optimizer: every op inside
`optimizer.step()`; reduction; element-wise), its FLOPs (matmuls: FlopCounterMode's formulas, plus
2 per matrix element for mv and dot, which it leaves out; any other op 1 per output element,
reductions 1 per input element: an approximation) and its bytes (the distinct elements of every
tensor it reads or writes, times the item size; a stride-0 broadcast axis holds one element).

`fuse_chains(ops)` is the ideal fusion used for compiled steps: every run of element-wise and
reduction kernels between two matmul or optimizer kernels, within one phase (forward, backward),
becomes ONE kernel whose bytes are what the run reads from outside it plus what it writes that is
read outside it (or never read again). Compilers fuse less (a reduction of another shape ends a
kernel), so this is a best case.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import backends
from backends import data as data_mod
from backends import spec

MATMUL_OPS = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot"}
REDUCTION_OPS = {"sum", "mean", "var", "std", "var_mean", "amax", "amin", "max", "min", "norm",
                 "linalg_vector_norm", "prod", "logsumexp", "mse_loss", "native_layer_norm",
                 "native_layer_norm_backward", "_softmax", "_softmax_backward_data", "_log_softmax"}
NO_DATA_OPS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_unsafe_view",
               "_local_scalar_dense", "lift_fresh", "set_", "resize_", "_reshape_alias", "is_same_size"}
OVERWRITE_OPS = {"zero_", "fill_", "copy_", "_foreach_zero_", "_foreach_copy_"}  # the target is not read
FUSIBLE = ("elementwise", "reduction")
CLASSES = ("matmul", "reduction", "elementwise", "optimizer")


@dataclasses.dataclass(frozen=True)
class Op:
    """One kernel: what it is, its work, and the (storage, version, bytes) it reads and writes."""

    name: str
    kind: str
    phase: str
    flops: float
    bytes: int
    half: bool = False
    reads: tuple = ()
    writes: tuple = ()


def touched_bytes(t: torch.Tensor) -> int:
    """Distinct elements a tensor covers (a broadcast, stride-0 axis holds one) times item size."""
    return math.prod(n for n, s in zip(t.shape, t.stride()) if s != 0) * t.element_size()


def tensors_in(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


class OpCounter(TorchDispatchMode):
    """Records every data-moving aten op run inside `with OpCounter() as c:` in `c.ops`."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self.phase: str | None = None  # "optimizer" while an optimizer steps (set by the hooks)
        self.versions: dict[int, int] = {}  # storage address -> writes so far

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if func.namespace != "aten" or func.is_view or name in NO_DATA_OPS:
            return out
        schema = func._schema.arguments
        given = [args[i] if i < len(args) else kwargs.get(a.name) for i, a in enumerate(schema)]
        # The fused Adam kernels declare their gradients writable but only unscale them in place
        # when given a grad_scale (AMP with a GradScaler).
        unscaled = name.startswith("_fused_adam") and kwargs.get("grad_scale") is None
        read_only = {"grads"} if unscaled else set()
        written = [t for a, v in zip(schema, given) if a.alias_info and a.alias_info.is_write
                   and a.name not in read_only for t in tensors_in(v)]
        overwritten = {id(t) for t in written} if name in OVERWRITE_OPS else set()
        reads = [self._region(t) for t in tensors_in((args, kwargs)) if id(t) not in overwritten]
        unique_out = {(t.data_ptr(), tuple(t.shape)): t for t in written + tensors_in(out)}
        writes = [self._region(t, write=True) for t in unique_out.values()]
        n_out = sum(t.numel() for t in unique_out.values())
        if func.overloadpacket in flop_registry:
            kind, flops = "matmul", flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
        elif name in MATMUL_OPS:  # matrix-vector products, which FlopCounterMode leaves out
            kind, flops = "matmul", 2 * max(t.numel() for t in tensors_in(args))
        elif self.phase == "optimizer" or name.startswith(("_foreach_", "_fused_adam")):
            kind, flops = "optimizer", n_out
        elif name in REDUCTION_OPS:
            kind, flops = "reduction", sum(t.numel() for t in tensors_in(args))
        else:
            kind, flops = "elementwise", n_out
        phase = self.phase or ("backward" if torch._C._current_autograd_node() is not None else "forward")
        half = any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors_in(args))
        self.ops.append(Op(name, kind, phase, float(flops), sum(r[2] for r in reads + writes), half,
                           tuple(reads), tuple(writes)))
        return out

    def _region(self, t: torch.Tensor, write: bool = False) -> tuple[int, int, int, int]:
        key = t.untyped_storage().data_ptr()
        if write:
            self.versions[key] = self.versions.get(key, 0) + 1
        return key, self.versions.get(key, 0), touched_bytes(t), t.data_ptr()


def count(fn: Callable[[], object]) -> list[Op]:
    """The kernels `fn()` runs; inside any `optimizer.step()` they are optimizer kernels, and an
    AdamW left to choose its implementation uses foreach, as it would on CUDA."""
    counter = OpCounter()

    def enter_step(optimizer: object, *_: object) -> None:
        counter.phase = "optimizer"
        for group in optimizer.param_groups:
            if not group.get("fused") and group.get("foreach") is None:
                group["foreach"] = True

    hooks = [register_optimizer_step_pre_hook(enter_step),
             register_optimizer_step_post_hook(lambda *_: setattr(counter, "phase", None))]
    try:
        with counter:
            fn()
    finally:
        for hook in hooks:
            hook.remove()
    return counter.ops


def count_step(backend: str, options: dict, cfg: spec.TromptConfig, dataset: data_mod.Dataset,
               batch: int) -> list[Op]:
    """The kernels of one training step of `batch` rows, after a one-row step (AdamW's state)."""
    rows = spec.BATCH_SIZE
    trainer = backends.load(backend, device="cpu").trainer(
        spec.init_params(cfg, spec.SEED, "float32"), cfg, dataset.x_train[:rows], dataset.y_train[:rows],
        **options)
    trainer.run([np.arange(1)])
    trainer.sync()
    return count(lambda: (trainer.run([np.arange(batch)]), trainer.sync()))


def fuse_chains(ops: list[Op]) -> list[Op]:
    """The ideal fusion of the module docstring: element-wise/reduction runs become one kernel."""
    groups: list[list[Op]] = []
    for op in ops:
        last = groups[-1][-1] if groups else None
        if last and op.kind in FUSIBLE and last.kind in FUSIBLE and op.phase == last.phase:
            groups[-1].append(op)
        else:
            groups.append([op])
    readers: dict[tuple, set[int]] = {}
    for g, group in enumerate(groups):
        for op in group:
            for key, version, _, _ in op.reads:
                readers.setdefault((key, version), set()).add(g)
    fused = []
    for g, group in enumerate(groups):
        if len(group) == 1:
            fused.append(group[0])
            continue
        made = {(k, v) for op in group for k, v, _, _ in op.writes}
        ins = {(k, v, p): n for op in group for k, v, n, p in op.reads if (k, v) not in made}
        outs = {(k, v, p): n for op in group for k, v, n, p in op.writes
                if readers.get((k, v), set()) - {g} or not readers.get((k, v))}
        fused.append(Op("fused chain", "elementwise", group[0].phase, sum(op.flops for op in group),
                        sum(ins.values()) + sum(outs.values())))
    return fused


def summary(ops: list[Op]) -> dict:
    def totals(chosen: list[Op]) -> dict:
        return {"kernels": len(chosen), "flops": sum(op.flops for op in chosen),
                "bytes": sum(op.bytes for op in chosen)}

    return {**totals(ops), "by_class": {c: totals([op for op in ops if op.kind == c]) for c in CLASSES}}
