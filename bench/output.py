"""Everything bench writes goes through here: atomic files with ordinary permissions, and the one
markdown-table helper.

Atomic: the content goes to a temporary file in the target's folder (a name unique to this
process), is flushed to disk, and is renamed over the target, so a reader, or a run killed at any
instant, sees the old file or the new one, never half of one. `mkstemp` creates files readable
by their owner only; the finished file gets the mode an ordinary `open()` would give it (0666
less the umask, typically 0644), so shared result folders stay readable.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Callable[[str], object], replace: bool = True) -> None:
    """`write(temporary path)`, then rename it onto `path`. With replace=False an existing `path`
    is never overwritten, even one another process created a moment ago (a hard link is made
    atomically or not at all): a FileExistsError instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    Path(tmp).unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, obj: Any, replace: bool = True) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"), replace)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]],
                   align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; `align` holds "l" or "r" per column (default: left)."""
    align = align or ["l"] * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
