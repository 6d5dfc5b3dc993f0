"""Multi-device training in MLX: none here, deliberately; one device per process.

MLX's data parallelism is multi-process (`mx.distributed` with the ring or MPI backend, started
by `mlx.launch`), meant for several Macs or several processes each owning a GPU. On one CPU
there is one MLX device, and MLX's CPU ops already use the cores they can, so a second process
would only split the same cores. The backend therefore declares `parallel` with the one choice
"none" (any other mode is the base's one-line ValueError).

If a multi-Mac run is ever wanted, the path is the one mlx-examples' cifar uses: each rank
takes its slice of every batch, `mx.distributed.all_sum` averages the gradients before the
AdamW update, and world size 1 runs the same code.
"""

from __future__ import annotations

from backends.base import Option, parallel_option

PARALLEL_OPTION: Option = parallel_option()  # "none" only
