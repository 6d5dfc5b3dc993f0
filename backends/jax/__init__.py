"""The Trompt in JAX: Flax NNX model, Optax AdamW, jit + lax.scan, multi-device (issue 5).

    b = backends.load("jax", device="cpu", dtype="float32")   # or device="gpu" / "tpu"
    trainer = b.trainer(params, cfg, x_train, y_train, parallel="sharding", variant="r5")

Files, as in every backend: model.py (the model), train.py (optimizer, step, Trainer, Backend),
parallel.py (one device or several). JAX is imported only when the backend is made, so that the
CPU setting below can still take effect.
"""

from backends.registry import register

register("jax", "backends.jax.train:JaxBackend", framework="jax", extra="jax")
