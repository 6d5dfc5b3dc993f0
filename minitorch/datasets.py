"""Module 0: toy two-dimensional classification sets used by the training scripts.

Each constructor draws N points uniformly in the unit square (Python's ``random``; seed it for
repeatable data) and labels them 0/1 by a simple geometric rule.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass


def make_pts(N: int) -> list[tuple[float, float]]:
    """N random points in the unit square."""
    return [(random.random(), random.random()) for _ in range(N)]


@dataclass
class Graph:
    N: int
    X: list[tuple[float, float]]
    y: list[int]


def simple(N: int) -> Graph:
    """Label 1 left of the vertical line x1 = 0.5."""
    X = make_pts(N)
    return Graph(N, X, [1 if x1 < 0.5 else 0 for x1, _ in X])


def diag(N: int) -> Graph:
    """Label 1 below the diagonal x1 + x2 = 0.5."""
    X = make_pts(N)
    return Graph(N, X, [1 if x1 + x2 < 0.5 else 0 for x1, x2 in X])


def split(N: int) -> Graph:
    """Label 1 in the two outer vertical bands x1 < 0.2 and x1 > 0.8."""
    X = make_pts(N)
    return Graph(N, X, [1 if x1 < 0.2 or x1 > 0.8 else 0 for x1, _ in X])


def xor(N: int) -> Graph:
    """Label 1 where exactly one coordinate is above 0.5."""
    X = make_pts(N)
    return Graph(N, X, [1 if (x1 > 0.5) != (x2 > 0.5) else 0 for x1, x2 in X])


def circle(N: int) -> Graph:
    """Label 1 outside a circle of squared radius 0.1 around the centre."""
    X = make_pts(N)
    return Graph(N, X, [1 if (x1 - 0.5) ** 2 + (x2 - 0.5) ** 2 > 0.1 else 0 for x1, x2 in X])


def spiral(N: int) -> Graph:
    """Two interleaved spirals, N // 2 points each, scaled into the unit square."""

    def arm(t: float, sign: float) -> tuple[float, float]:
        return (sign * t * math.cos(t) / 20.0 + 0.5, sign * t * math.sin(t) / 20.0 + 0.5)

    half = N // 2
    steps = [5.0 + 5.0 * i / max(half, 1) for i in range(half)]
    X = [arm(t, 1.0) for t in steps] + [arm(t, -1.0) for t in steps]
    y = [0] * half + [1] * half
    return Graph(len(X), X, y)


datasets: dict[str, Callable[[int], Graph]] = {
    "Simple": simple,
    "Diag": diag,
    "Split": split,
    "Xor": xor,
    "Circle": circle,
    "Spiral": spiral,
}
