"""PyTorch backend: the exact fast Trompt (rewrites r2..r5), a device-resident trainer with fused
AdamW, torch.compile, AMP and CUDA graphs, and multi-process ddp / cell-parallel training.

    model.py     the rewrites, each a function (params, x) -> (B, N), and why each is exact
    train.py     TorchBackend (numpy checking surface) and TorchTrainer (the speed surface)
    parallel.py  torchrun data-parallel and cell-parallel modes (and a 2-process self-check)

Nothing is imported here eagerly, so `python -m backends.torch.parallel` runs cleanly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.torch.train import TorchBackend


def make_backend(device: str = "cpu", dtype: str = "float32", variant: str = "r5") -> TorchBackend:
    from backends.torch.train import TorchBackend

    return TorchBackend(device=device, dtype=dtype, variant=variant)
