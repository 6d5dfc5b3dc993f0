"""Module 0: ``Module`` and ``Parameter``, the bookkeeping behind every network.

A ``Module`` files each attribute as it is assigned: a ``Parameter`` goes to ``_parameters``,
another ``Module`` to ``_modules``, anything else stays an ordinary attribute. Walking those two
dictionaries recursively gives ``named_parameters()`` with dotted names, and ``train()`` /
``eval()`` flip the ``training`` flag on the whole tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Module:
    """A node in a tree of modules; subclasses implement ``forward``."""

    _modules: dict[str, Module]
    _parameters: dict[str, Parameter]
    training: bool

    def __init__(self) -> None:
        # Bypass our own __setattr__: these three are the bookkeeping itself.
        self.__dict__["_modules"] = {}
        self.__dict__["_parameters"] = {}
        self.__dict__["training"] = True

    def modules(self) -> Sequence[Module]:
        """The direct child modules."""
        return list(self.__dict__["_modules"].values())

    def train(self) -> None:
        """Put this module and every descendant in training mode."""
        self.__dict__["training"] = True
        for child in self.modules():
            child.train()

    def eval(self) -> None:
        """Put this module and every descendant in evaluation mode."""
        self.__dict__["training"] = False
        for child in self.modules():
            child.eval()

    def named_parameters(self) -> Sequence[tuple[str, Parameter]]:
        """(name, parameter) for this module and all descendants; children get a dotted prefix."""
        named = list(self.__dict__["_parameters"].items())
        for child_name, child in self.__dict__["_modules"].items():
            named.extend((f"{child_name}.{name}", p) for name, p in child.named_parameters())
        return named

    def parameters(self) -> Sequence[Parameter]:
        """Every parameter of this module and its descendants."""
        return [p for _, p in self.named_parameters()]

    def add_parameter(self, name: str, value: Any) -> Parameter:
        """Wrap ``value`` in a ``Parameter``, register it under ``name`` and return it."""
        parameter = Parameter(value, name)
        self.__dict__["_parameters"][name] = parameter
        return parameter

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Parameter):
            self.__dict__["_parameters"][name] = value
        elif isinstance(value, Module):
            self.__dict__["_modules"][name] = value
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for registered parameters and children.
        if name in self.__dict__["_parameters"]:
            return self.__dict__["_parameters"][name]
        if name in self.__dict__["_modules"]:
            return self.__dict__["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, child in self.__dict__["_modules"].items():
            child_lines = repr(child).split("\n")
            lines.append(f"  ({name}): " + "\n  ".join(child_lines))
        if len(lines) == 1:
            return f"{type(self).__name__}()"
        lines.append(")")
        return "\n".join(lines)


class Parameter:
    """A named, trainable value held by a ``Module``.

    If the value can track gradients (it has ``requires_grad_``), wrapping it switches that on.
    """

    def __init__(self, x: Any, name: str | None = None) -> None:
        self.name = name
        self.update(x)

    def update(self, x: Any) -> None:
        """Replace the wrapped value, switching on gradient tracking and naming it."""
        self.value = x
        if hasattr(x, "requires_grad_"):
            x.requires_grad_(True)
            if self.name:
                x.name = self.name

    def __repr__(self) -> str:
        return repr(self.value)

    def __str__(self) -> str:
        return str(self.value)
