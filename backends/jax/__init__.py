"""The Trompt in JAX: Flax NNX model, Optax AdamW, jit + lax.scan, multi-device (issue 5).

    b = backends.load("jax", device="cpu", dtype="float32")   # or device="gpu" / "tpu"
    trainer = b.trainer(params, cfg, x_train, y_train, parallel="sharding", variant="r5")

Files, as in every backend: model.py (the model), train.py (optimizer, step, Trainer, Backend),
parallel.py (one device or several). JAX is imported only when the backend is made, so that the
CPU setting below can still take effect.
"""

from __future__ import annotations

import os
import sys

# jaxlib 0.10's CPU compiler hands reductions to YNNPACK fusions that materialise full-size
# broadcast copies; turning that off roughly halves a Trompt step and gives identical numbers
# (frameworks_notes.md, "Measured on a 2-core ... CPU"). XLA reads XLA_FLAGS once, when JAX
# starts its CPU client, so this can only be applied before JAX is imported. CPU only: the TPU
# and GPU plugins parse XLA_FLAGS too and may not know this CPU flag.
CPU_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"


def _apply_cpu_xla_flag() -> bool:
    """Add CPU_XLA_FLAG to XLA_FLAGS unless JAX is already imported or the user set it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" in sys.modules or "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_XLA_FLAG}".strip()
    return True


def make_backend(device: str = "cpu", dtype: str = "float32"):
    if device == "cpu":
        _apply_cpu_xla_flag()
    from backends.jax.train import make_backend as make

    return make(device=device, dtype=dtype)
