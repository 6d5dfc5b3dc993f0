"""PyTorch backend: the exact fast Trompt (rewrites r2..r5), a device-resident trainer with fused
AdamW, torch.compile, AMP and CUDA graphs, and multi-process ddp / cell-parallel training.

    model.py     the rewrites, each a function (params, x) -> (B, N), and why each is exact
    train.py     TorchBackend (devices, dtypes, options) and TorchTrainer
    parallel.py  torchrun data-parallel and cell-parallel modes (and a 2-process self-check)

Registration only: torch is imported when the backend is loaded.
"""

from backends.registry import register

register("torch", "backends.torch.train:TorchBackend", framework="torch", extra="torch")
