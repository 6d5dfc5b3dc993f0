"""Which backends exist and how to make one. A backend package registers itself in its
`__init__.py` with one `register(...)` call; nothing here imports a framework."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

from backends.base import Backend


@dataclasses.dataclass(frozen=True)
class Registration:
    name: str
    backend_class: str  # "package.module:ClassName", imported only by `load`
    framework: str  # the module that must be importable (e.g. "jax")
    extra: str  # the pyproject extra that installs it

    def installed(self) -> bool:
        return importlib.util.find_spec(self.framework) is not None


REGISTRY: dict[str, Registration] = {}


def register(name: str, backend_class: str, framework: str, extra: str) -> None:
    if name in REGISTRY and REGISTRY[name].backend_class != backend_class:
        raise ValueError(f"backend {name!r} is already registered as {REGISTRY[name].backend_class}")
    REGISTRY[name] = Registration(name, backend_class, framework, extra)


def available() -> list[str]:
    """Registered backends whose framework is installed."""
    return [name for name, reg in REGISTRY.items() if reg.installed()]


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass of `name` (imports its framework); one-line ValueErrors."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(REGISTRY)}")
    reg = REGISTRY[name]
    if not reg.installed():
        raise ValueError(f"backend {name!r} needs {reg.framework}: pip install -e '.[{reg.extra}]'")
    module, _, cls = reg.backend_class.partition(":")
    return getattr(importlib.import_module(module), cls)


def load(name: str, device: str = "cpu", dtype: str = "float32") -> Backend:
    """Instantiate backend `name` on `device` in `dtype`; every failure is a one-line ValueError."""
    return backend_class(name)(device=device, dtype=dtype)
