"""Module 1: the machinery of reverse-mode automatic differentiation, for any value type.

Scalars and tensors both implement the ``Variable`` protocol below. ``backpropagate`` only
talks to that protocol: it orders the graph so every node comes before the nodes it was computed
from, then pushes derivatives from the output back to the leaves with each node's
``chain_rule``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


def central_difference(f: Any, *vals: Any, arg: int = 0, epsilon: float = 1e-6) -> Any:
    """Estimate the derivative of ``f`` in argument ``arg`` by (f(x+h) - f(x-h)) / 2h.

    Only ``+``, ``-`` and ``/`` are applied to the values, so this works for floats and for
    autodiff values alike.
    """
    plus = [v + epsilon if i == arg else v for i, v in enumerate(vals)]
    minus = [v - epsilon if i == arg else v for i, v in enumerate(vals)]
    return (f(*plus) - f(*minus)) / (2.0 * epsilon)


class Variable(Protocol):
    def accumulate_derivative(self, x: Any) -> None: ...

    @property
    def unique_id(self) -> int: ...

    def is_leaf(self) -> bool: ...

    def is_constant(self) -> bool: ...

    @property
    def parents(self) -> Iterable[Variable]: ...

    def chain_rule(self, d_output: Any) -> Iterable[tuple[Variable, Any]]: ...


def topological_sort(variable: Variable) -> Iterable[Variable]:
    """Non-constant variables reachable from ``variable``, each before the ones it depends on.

    A depth-first search appends a node after all its parents (post-order); reversing that list
    puts the output first. Iterative, so deep graphs do not hit Python's recursion limit.
    """
    visited: set[int] = set()
    post_order: list[Variable] = []
    stack: list[tuple[Variable, bool]] = [(variable, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            post_order.append(node)
            continue
        if node.unique_id in visited or node.is_constant():
            continue
        visited.add(node.unique_id)
        stack.append((node, True))
        if not node.is_leaf():
            for parent in node.parents:
                if parent.unique_id not in visited and not parent.is_constant():
                    stack.append((parent, False))
    return list(reversed(post_order))


def backpropagate(variable: Variable, deriv: Any) -> None:
    """Send ``deriv`` (d output / d variable) back through the graph to every leaf.

    Walking in topological order guarantees a node's derivative is complete (all its uses have
    contributed) before it is passed on to its parents.
    """
    derivatives: dict[int, Any] = {variable.unique_id: deriv}
    for node in topological_sort(variable):
        d = derivatives.pop(node.unique_id, None)
        if d is None:
            continue
        if node.is_leaf():
            node.accumulate_derivative(d)
            continue
        for parent, d_parent in node.chain_rule(d):
            if parent.is_constant():
                continue
            if parent.unique_id in derivatives:
                derivatives[parent.unique_id] = derivatives[parent.unique_id] + d_parent
            else:
                derivatives[parent.unique_id] = d_parent


@dataclass
class Context:
    """What a function's forward pass saves for its backward pass."""

    no_grad: bool = False
    saved_values: tuple[Any, ...] = ()

    def save_for_backward(self, *values: Any) -> None:
        """Keep ``values`` for backward (nothing is kept when gradients are off)."""
        if self.no_grad:
            return
        self.saved_values = values

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        return self.saved_values
