"""Trompt backends behind one contract (backends/base.py). `bench` reaches every framework only
through `load`:

    import backends
    backends.available()                          # registered and installed
    b = backends.load("torch", device="cpu", dtype="float32")

Importing this package needs numpy only: each backend package below registers itself without
importing its framework, which is imported when the backend is loaded.
"""

from __future__ import annotations

from backends.base import Backend, Option, Trainer
from backends.registry import REGISTRY, available, backend_class, load, register
from backends.spec import TromptConfig, init_params, param_names, param_shapes

# isort: split
# The backends that ship with the project, the reference (the original, the oracle) first. Each
# registers itself on import; none imports its framework.
import reference  # noqa: F401
from backends import jax, mlx, tinygrad, torch  # noqa: F401

__all__ = ["REGISTRY", "Backend", "Option", "Trainer", "TromptConfig", "available", "backend_class",
           "init_params", "load", "param_names", "param_shapes", "register"]
