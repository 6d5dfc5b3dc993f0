"""Multi-process training for the torch backend: data parallel and cell parallel, one code path.

Launch the standard way; every rank runs the same program and sees the same index batches:

    torchrun --nproc_per_node=G -m bench --backend torch --device cuda --parallel ddp
    torchrun --nproc_per_node=G -m bench --backend torch --device cuda --parallel cells
    torchrun --standalone --nproc_per_node=2 -m backends.torch.parallel --mode cells   # CPU self-check

ddp    Data parallel at the ORIGINAL global batch: each rank takes its slice of the batch of 8 and
       the summed (not averaged) gradients of Σ(ŷ − y)² / (B·N) over the slices equal the
       single-device gradient exactly, also for a last partial batch whose slices are uneven or
       empty. All 2.6 M gradients are all-reduced every step (10.4 MB in fp32): by default through
       torch's DistributedDataParallel (ddp_impl=torch: buckets all-reduced while the backward
       still runs, summed by `sum_hook`), or as one flat buffer after the backward (ddp_impl=flat).
cells  Cell parallel (F8 in docs/SPEC.md): each rank owns a subset of the N cells and sees the
       whole batch; cells never read each other, so only the gradients of the shared prompt and
       head (33,410 numbers, 134 KB) are summed across ranks. Batch size stays 8.

With world size 1 both modes reduce to the single-device step. After the all-reduce every rank
applies the same AdamW to identical gradients, so replicated parameters stay identical.
A rank that dies makes the collectives of the others fail within `timeout_s` (never a hang).
Every process leaves the process group at exit (torch's shutdown rule for trainer processes).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

MODES = ("ddp", "cells")
DDP_IMPLS = ("torch", "flat")
EXIT_GRACE_S = 0.05  # see leave_group


class Group:
    """This process's place in a multi-process run (rank, world size, mode)."""

    def __init__(self, mode: str, rank: int, world: int) -> None:
        self.mode, self.rank, self.world = mode, rank, world

    def local_rows(self, idx: np.ndarray) -> np.ndarray:
        """The rows of a global batch this rank computes (its contiguous slice under ddp)."""
        return np.array_split(idx, self.world)[self.rank] if self.mode == "ddp" else idx

    def local_cells(self, n_cycles: int) -> list[int]:
        """The cells this rank owns (all of them under ddp)."""
        if self.mode != "cells":
            return list(range(n_cycles))
        return [int(n) for n in np.array_split(np.arange(n_cycles), self.world)[self.rank]]

    def all_reduce_sum_(self, tensors: list[torch.Tensor], unreduced: list[torch.Tensor] = ()) -> None:
        """Sum `tensors` over ranks in place, as ONE flat buffer (one collective per step).

        `unreduced` are gradients each rank keeps to itself (its own cells'). A GradScaler skips
        the step and backs off its scale when it sees a non-finite gradient, but each rank's scaler
        sees only its own: so whether any rank's `unreduced` holds inf/NaN rides along in the same
        buffer, and where one does, every rank marks one of its own gradients inf. Every scaler
        then skips the same steps and keeps the same scale, and the replicated parameters stay
        identical. The check stays on the device (no host sync); clean steps change no number."""
        if self.world == 1:
            return
        flag = []
        if unreduced:
            finite = torch.stack([torch.isfinite(g).all() for g in unreduced]).all()
            flag = [torch.logical_not(finite).to(tensors[0].dtype).reshape(1)]
        flat = torch.cat([t.reshape(-1) for t in [*tensors, *flag]])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
        if unreduced:
            unreduced[0].view(-1)[:1].masked_fill_(flat[-1] > 0, float("inf"))

    def all_reduce_sum_async(self, tensor: torch.Tensor) -> dist.Work | None:
        """Start summing `tensor` over ranks in place; wait() on the result before reading it."""
        if self.world == 1:
            return None
        return dist.all_reduce(tensor, op=dist.ReduceOp.SUM, async_op=True)

    def all_reduce_max(self, value: float) -> float:
        """The maximum of a host number over ranks (used so every rank times the same steps)."""
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces GPU tensors only
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def gather(self, obj: object) -> list:
        """Every rank's `obj`, in rank order (collective: all ranks must call it)."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def init_group(mode: str, device: str, timeout_s: float) -> Group:
    """Join the process group that torchrun describes in the environment (gloo on the CPU, nccl
    on CUDA; the backend has checked the device). Its collectives fail after `timeout_s` seconds
    without a peer; the process leaves the group at exit."""
    if mode not in MODES:
        raise ValueError(f"unknown parallel mode {mode!r}; choose one of {', '.join(MODES)}")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError(f"parallel={mode!r} must be launched with torchrun --nproc_per_node=G "
                         "(RANK/WORLD_SIZE are not set)")
    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if device == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
        # torch's distributed docs (Shutdown) ask every trainer process to call
        # destroy_process_group before it exits: NCCL otherwise warns and can leave a peer waiting
        # on work this process had queued. atexit also covers the exits through an error.
        atexit.register(leave_group)
    return Group(mode, dist.get_rank(), dist.get_world_size())


def leave_group() -> None:
    """destroy_process_group if this process is still in one (idempotent), then let gloo's
    worker threads finish before the interpreter shuts down.

    A gloo worker thread drops its last collective's tensors just after the collective completes,
    and needs the GIL for it; if the main thread holds the GIL until the interpreter starts
    finalizing, that thread is made to exit inside a destructor and the process aborts
    ("terminate called without an active exception": a few runs in a hundred of the two-rank
    self-check with torch 2.13, with or without destroy_process_group; none in 50 since this
    sleep). Sleeping releases the GIL for it."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    time.sleep(EXIT_GRACE_S)


def single_process() -> Group:
    return Group("none", 0, 1)


# ---------------------------------------------------------------------------------------------
# ddp_impl=torch: DistributedDataParallel over the loss


class LossModule(nn.Module):
    """The training loss as an nn.Module, for DistributedDataParallel: it registers `trained`
    (nn.Parameters, the very tensors the optimizer holds) and calls `loss(params, x, y,
    denominator)` with the whole dict `params`, which may hold tensors DDP must not reduce."""

    def __init__(self, params: dict[str, torch.Tensor], trained: list[str],
                 loss: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        for i, name in enumerate(trained):
            self.register_parameter(f"p{i}", params[name])  # names may not contain dots
        self._params, self._loss = params, loss

    def forward(self, x: torch.Tensor, y: torch.Tensor, denominator: int) -> torch.Tensor:
        return self._loss(self._params, x, y, denominator)


def sum_hook(process_group, bucket):
    """DDP communication hook (process group, dist.GradBucket) -> Future[Tensor]: SUM each gradient
    bucket over ranks. DDP's default hook divides by the world size first (an average); the ranks'
    losses here are already over the global B·N, so their gradients add up to the single-device
    one, and a registered hook replaces the default. Not annotated: DDP compares the annotations
    with the classes themselves, and this module's (postponed) annotations are strings."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def distributed(module: LossModule, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """`module` under DistributedDataParallel: bucketed all-reduces start while the backward still
    runs. gradient_as_bucket_view: the .grad tensors ARE the buckets (no copy in or out; zero them
    in place, never set them to None). static_graph: every step runs the same autograd graph (no
    data-dependent control flow, no unused parameter: the caller leaves the dead ones out)."""
    ddp = nn.parallel.DistributedDataParallel(
        module, device_ids=[device] if device.type == "cuda" else None, gradient_as_bucket_view=True,
        static_graph=True)
    ddp.register_comm_hook(None, sum_hook)
    return ddp


# ---------------------------------------------------------------------------------------------
# Self-check harness: a short run at a tiny config whose result a test compares with a
# single-process run (tests/backends/torch/test_parallel.py).


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--ddp-impl", choices=DDP_IMPLS, default="torch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", help="rank 0 writes final params, losses and gradients here (.npz)")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--resume-at", type=int, default=-1,
                        help="before this step, a second trainer from other parameters loads the "
                             "first one's state and takes the remaining steps beside it")
    parser.add_argument("--die-rank", type=int, default=-1, help="test hook: this rank exits ...")
    parser.add_argument("--die-step", type=int, default=-1, help="... just before this step")
    args = parser.parse_args(argv)

    import backends  # the trainer imports this module
    from backends.spec import init_params

    cfg, params, x, y, batches = selfcheck_problem(args.steps)
    backend = backends.load("torch", device="cpu", dtype="float32")
    options = {"parallel": args.mode, "ddp_impl": args.ddp_impl, "timeout_s": args.timeout_s}
    trainer = backend.trainer(params, cfg, x, y, **options)
    twin = None
    rank = trainer.group.rank
    for step, idx in enumerate(batches):
        if rank == args.die_rank and step == args.die_step:
            os._exit(3)  # simulate a crashed worker: no clean shutdown of the process group
        if step == args.resume_at:
            twin = backend.trainer(init_params(cfg, seed=4), cfg, x, y, **options)
            twin.load_state(trainer.state())
        trainer.step(idx)
        if twin is not None:
            twin.step(idx)
    losses, final = trainer.losses(), trainer.params()
    grad_loss, grads = trainer.gradients(batches[0])  # the one-row batch: an empty ddp slice
    out = {"losses": np.array(losses), "grad_loss": np.array(grad_loss),
           **{f"p:{k}": v for k, v in final.items()}, **{f"g:{k}": v for k, v in grads.items()}}
    if twin is not None:
        out["twin_losses"] = np.array(twin.losses())
        out.update({f"t:{k}": v for k, v in twin.params().items()})
    if rank == 0 and args.out:
        np.savez(args.out, **out)
    leave_group()
    return 0


def selfcheck_problem(steps: int) -> tuple:
    """A tiny deterministic problem whose batches include a partial one of a single row (so that
    one ddp rank gets an empty slice)."""
    from backends.spec import TromptConfig, init_params

    cfg = TromptConfig(n_columns=24, n_prompts=8, d_model=16, n_cycles=3)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(8 * steps + 1, cfg.n_columns)).astype(np.float32)
    y = rng.normal(size=len(x)).astype(np.float32)
    order = rng.permutation(len(x))
    batches = [order[i:i + 8] for i in range(0, len(x), 8)]
    batches = [batches[-1]] + batches[:-1]  # the 1-row batch first: uneven slices from the start
    return cfg, init_params(cfg, seed=3), x, y, batches[:steps]


if __name__ == "__main__":
    raise SystemExit(main())
