"""Multi-device training in tinygrad: none here, deliberately; one device per process.

tinygrad can shard a tensor over several devices of one kind (`Tensor.shard` over a tuple such
as ("CUDA:0", "CUDA:1")) and then all-reduces gradients itself, which is its data-parallel path
on multi-GPU machines. On a CPU there is one tinygrad device, and a second one would only split
the same cores. The backend therefore declares `parallel` with the one choice "none" (any other
mode is the base's one-line ValueError).

The multi-GPU version would shard every batch along axis 0 over the device tuple, replicate the
parameters and the AdamW state with `shard(devices, axis=None)`, and keep the same jitted step.
"""

from __future__ import annotations

from backends.base import Option, parallel_option

PARALLEL_OPTION: Option = parallel_option()  # "none" only
