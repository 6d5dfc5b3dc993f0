"""MLX backend: the R5 rewrite of Trompt (model.py), compiled with mx.compile (train.py).

    b = backends.load("mlx", device="cpu", dtype="float32")

Devices: "cpu" (Linux needs the mlx[cpu] wheel) and "gpu" (Metal on a Mac, or an mlx[cuda]
build). float64 exists on the CPU only. The contract is in backends/base.py.

On Linux the backend's modules load a system OpenBLAS before mlx.core (blas.py); the wheel's
bundled reference BLAS is ~50x slower on this model's GEMMs. TROMPT_MLX_BLAS=<path> picks another
library, TROMPT_MLX_BLAS=bundled keeps MLX's.
"""

from backends.registry import register

register("mlx", "backends.mlx.train:MLXBackend", framework="mlx", extra="mlx")
