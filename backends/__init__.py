"""Registry of Trompt backends. `bench` reaches every framework only through `load`.

    import backends
    backends.available()                          # installed backends
    b = backends.load("torch", device="cpu", dtype="float32")

Importing this package needs numpy only; a framework is imported when its backend is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util

from backends.base import Backend, Trainer
from backends.spec import TromptConfig, init_params, param_names, param_shapes

__all__ = ["Backend", "Trainer", "TromptConfig", "available", "init_params", "load",
           "param_names", "param_shapes", "REGISTRY"]

# name -> (module implementing it, the framework it needs, the pyproject extra that installs it)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "reference": ("reference.backend", "torch", "torch"),
    "torch": ("backends.torch", "torch", "torch"),
    "jax": ("backends.jax", "jax", "jax"),
    "mlx": ("backends.mlx", "mlx", "mlx"),
    "tinygrad": ("backends.tinygrad", "tinygrad", "tinygrad"),
}


def _implemented(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def available() -> list[str]:
    """Backends whose code exists and whose framework is installed."""
    return [name for name, (module, framework, _) in REGISTRY.items()
            if _implemented(module) and importlib.util.find_spec(framework) is not None]


def load(name: str, device: str = "cpu", dtype: str = "float32") -> Backend:
    """Instantiate backend `name` on `device`; every failure is a one-line ValueError."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(available()) or 'none'}")
    module, framework, extra = REGISTRY[name]
    if not _implemented(module):
        raise ValueError(f"backend {name!r} is not implemented in this checkout")
    if importlib.util.find_spec(framework) is None:
        raise ValueError(f"backend {name!r} needs {framework}: pip install -e '.[{extra}]'")
    return importlib.import_module(module).make_backend(device=device, dtype=dtype)
