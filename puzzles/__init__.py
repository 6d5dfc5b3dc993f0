"""The 21 Tensor Puzzles (after srush/Tensor-Puzzles), one source running on six backends.

    import puzzles
    torch_puzzles = puzzles.bind("torch")
    torch_puzzles.cumsum(torch.tensor([1, 2, 3]))      # tensor([1, 3, 6])

    python -m puzzles            # pass table, puzzle x backend
    python -m puzzles check      # the rule checker

Files: solutions.py (the one-liners), primitives.py (the arange/where contract), backends.py
(per-framework primitives), binding.py (rebinding the solutions per backend), specs.py (plain
Python loop specifications), cases.py (inputs), harness.py (run and compare), rules.py (the ast
rule checker), drawing.py (pictures for the notebook). Importing this package imports no framework.
"""

from puzzles.backends import NAMES as BACKEND_NAMES
from puzzles.binding import bind
from puzzles.catalog import PUZZLE_NAMES

__all__ = ["BACKEND_NAMES", "PUZZLE_NAMES", "bind"]
