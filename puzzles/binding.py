"""One source, many backends: rebinding the names `arange` and `where` in the solutions.

A Python function looks up its global names in the dict it was created with. `bind` recreates
each solution function from its compiled code object with a fresh global dict holding:
* `arange` and `where` from the chosen backend,
* the 21 rebound puzzles themselves (so `cumsum` calls this backend's `triu`),
* empty builtins, so a solution that sneaks in `len`, `max` or `range` fails with a NameError
  even before the rule checker (rules.py) complains.
No source text is copied or executed; solutions.py stays the only copy of the solutions.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from puzzles import solutions
from puzzles.backends import load
from puzzles.catalog import PUZZLE_NAMES


def rebind(functions: dict[str, Callable[..., Any]], arange: Callable[..., Any],
           where: Callable[..., Any]) -> types.SimpleNamespace:
    """Copies of `functions` whose globals are the given primitives and each other."""
    namespace: dict[str, Any] = {"__builtins__": {}, "arange": arange, "where": where}
    for name, function in functions.items():
        namespace[name] = types.FunctionType(function.__code__, namespace, name,
                                             function.__defaults__, function.__closure__)
    return types.SimpleNamespace(**{name: namespace[name] for name in functions})


def bind(backend: str) -> types.SimpleNamespace:
    """The 21 puzzles running on `backend` ("numpy", "torch", "jax", "tinygrad", "mlx", "minitorch")."""
    primitives = load(backend)
    functions = {name: getattr(solutions, name) for name in PUZZLE_NAMES}
    return rebind(functions, primitives.arange, primitives.where)
