"""notebooks/puzzles.ipynb is committed without outputs and covers every puzzle.

Executing it is CI's job (nbmake/papermill); this only checks what a reviewer would see in a diff.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from puzzles.catalog import PUZZLE_NAMES

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "puzzles.ipynb"


def test_notebook_is_valid_and_stripped() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells)


def test_notebook_shows_every_puzzle_in_order() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    shown = [cell.source[len('show("'):-len('")')] for cell in notebook.cells
             if cell.cell_type == "code" and cell.source.startswith('show("')]
    assert shown == list(PUZZLE_NAMES)
