"""MLX backend: the R5 rewrite of Trompt (model.py), compiled with mx.compile (train.py).

    b = backends.load("mlx", device="cpu", dtype="float32")

Devices: "cpu" (Linux needs the mlx[cpu] wheel) and "gpu" (Metal on a Mac, or an mlx[cuda]
build). float64 exists on the CPU only. The contract is in backends/base.py.

BLAS on Linux: the mlx-cpu wheel links a bundled netlib *reference* BLAS, ~50x slower than
OpenBLAS on this model's GEMMs (docs/REPORT.md). When a system OpenBLAS is present it is loaded
here with RTLD_GLOBAL before mlx.core, so MLX's cblas_sgemm/dgemm calls resolve to it.
TROMPT_MLX_BLAS=<path to a libopenblas.so> picks another; TROMPT_MLX_BLAS=bundled keeps MLX's.
"""

from backends.registry import register

register("mlx", "backends.mlx.train:MLXBackend", framework="mlx", extra="mlx")
