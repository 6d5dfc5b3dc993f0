"""Which BLAS MLX's CPU kernels call, decided before `mlx.core` is first imported.

The mlx-cpu wheel for Linux links a bundled netlib *reference* BLAS, ~50x slower than OpenBLAS
on this model's GEMMs (docs/REPORT.md). When a system OpenBLAS is present it is loaded here with
RTLD_GLOBAL, so MLX's cblas_sgemm/dgemm calls resolve to it. TROMPT_MLX_BLAS=<path to a
libopenblas.so> picks another; TROMPT_MLX_BLAS=bundled keeps MLX's.

Every module of this backend imports this one before `mlx.core`: once mlx.core is loaded, its
symbols are bound and a later preload changes nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",  # Debian/Ubuntu libopenblas0-pthread
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
)


def _preload_blas() -> str:
    """Load OpenBLAS globally before mlx.core binds its BLAS symbols; returns what MLX will use."""
    if sys.platform != "linux":
        return "platform BLAS (Accelerate on macOS)"
    if "mlx.core" in sys.modules:  # too late to change the binding in this process
        return "bundled reference BLAS (mlx.core was imported before backends.mlx)"
    choice = os.environ.get("TROMPT_MLX_BLAS", "")
    if choice == "bundled":
        return "bundled reference BLAS (TROMPT_MLX_BLAS=bundled)"
    path = choice or next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)
    if path is None:
        return "bundled reference BLAS (no system OpenBLAS: apt-get install libopenblas0-pthread)"
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise ValueError(f"TROMPT_MLX_BLAS: cannot load {path}: {e}") from None
    return f"OpenBLAS {path}"


BLAS_IN_USE = _preload_blas()
