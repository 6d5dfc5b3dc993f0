"""Multi-device training in tinygrad: none here, deliberately; one device per process.

tinygrad can shard a tensor over several devices of one kind (`Tensor.shard` over a tuple such as
("CUDA:0", "CUDA:1")) and then all-reduces gradients itself, which is its data-parallel path on
multi-GPU machines. On a CPU there is one tinygrad device, and a second one would only split the
same cores. The trainer therefore accepts no `parallel` mode and says so.

The multi-GPU version would shard every batch along axis 0 over the device tuple, replicate the
parameters and the AdamW state with `shard(devices, axis=None)`, and keep the same jitted step.
"""

from __future__ import annotations

PARALLEL_MODES: tuple[str, ...] = ()


def check_parallel(mode: str | None) -> None:
    """Accept only "no parallelism"; anything else is a one-line ValueError."""
    if mode not in (None, "none"):
        raise ValueError(f"backend 'tinygrad' has no parallel mode {mode!r}: "
                         "it runs on one device per process")
