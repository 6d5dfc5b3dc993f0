"""The Trompt in JAX: Flax NNX model, Optax AdamW, jit + lax.scan, multi-device.

    b = backends.load("jax", device="cpu", dtype="float32")   # or device="gpu" / "tpu"
    trainer = b.trainer(params, cfg, x_train, y_train, parallel="sharding", variant="r5")

Files, as in every backend: model.py (the model; its hand backward in backward.py), train.py
(optimizer, step, Trainer, Backend), parallel.py (one device or several), and xla_flags.py (an
XLA setting for the CPU, which the others import before JAX). Nothing here imports JAX.
"""

from backends.registry import register

register("jax", "backends.jax.train:JaxBackend", framework="jax", extra="jax")
