"""Pictures of one puzzle call for the notebook: each tensor as a grid of numbered cells.

Colours: positive numbers (and True) orange, negative numbers blue, zero (and False) white; the
stronger the colour, the larger the magnitude. Sizes passed as Python ints appear in the title.
matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puzzles.cases import Case, RandomDraw, draw_case
from puzzles.catalog import PUZZLES

ORANGE = np.array([0.95, 0.55, 0.15])
BLUE = np.array([0.20, 0.45, 0.85])
WHITE = np.array([1.0, 1.0, 1.0])


def illustration_case(name: str, candidates: int = 20) -> Case:
    """Among the first `candidates` seeded random cases, the one with the most elements to show."""
    def elements(case: Case) -> int:
        return int(np.prod(case.shape)) + sum(a.size for a in case.args if isinstance(a, np.ndarray))
    return max((draw_case(name, RandomDraw(seed)) for seed in range(candidates)), key=elements)


def cell_colours(array: np.ndarray) -> np.ndarray:
    """An (rows, cols, 3) RGB image for a 2-D array, following the colour rule above."""
    values = array.astype(np.float64)
    scale = max(1.0, float(np.abs(values).max(initial=0.0)))
    strength = (np.abs(values) / scale)[..., None] * 0.85 + 0.15 * (values != 0)[..., None]
    hue = np.where((values >= 0)[..., None], ORANGE, BLUE)
    return WHITE + (hue - WHITE) * strength


def draw_grid(ax: Any, array: np.ndarray, label: str) -> None:
    grid = array.reshape(1, -1) if array.ndim <= 1 else array
    ax.set_title(f"{label}  {tuple(array.shape)}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if grid.size == 0:
        ax.text(0.5, 0.5, "(empty)", ha="center", va="center", transform=ax.transAxes)
        return
    ax.imshow(cell_colours(grid), aspect="equal")
    for (row, col), value in np.ndenumerate(grid):
        text = ("T" if value else "F") if grid.dtype == np.bool_ else f"{value:.3g}"
        ax.text(col, row, text, ha="center", va="center", fontsize=9)
    ax.set_xticks(np.arange(-0.5, grid.shape[1]), minor=True)
    ax.set_yticks(np.arange(-0.5, grid.shape[0]), minor=True)
    ax.grid(which="minor", color="0.6", linewidth=0.8)
    ax.tick_params(which="minor", length=0)


def draw_call(name: str, case: Case, result: np.ndarray) -> Any:
    """A matplotlib Figure: the tensor arguments of `name(*case.args)`, then its result."""
    import matplotlib.pyplot as plt

    parameters = PUZZLES[name][0]
    panels = [(p, a) for p, a in zip(parameters, case.args) if isinstance(a, np.ndarray)]
    panels.append(("out", np.asarray(result)))
    widths = [max(1, a.shape[-1] if a.ndim else 1) for _, a in panels]
    figure, axes = plt.subplots(1, len(panels), figsize=(1.2 + 0.45 * sum(widths) + 0.6 * len(panels), 2.4),
                                gridspec_kw={"width_ratios": widths}, squeeze=False)
    for ax, (label, array) in zip(axes[0], panels):
        draw_grid(ax, array, label)
    sizes = ", ".join(f"{p}={a}" for p, a in zip(parameters, case.args) if not isinstance(a, np.ndarray))
    figure.suptitle(f"{name}({sizes})" if sizes else name, fontsize=11)
    figure.tight_layout()
    return figure
