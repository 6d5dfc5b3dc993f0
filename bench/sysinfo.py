"""Facts about the machine a result came from (framework-free)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from backends.base import cpu_name

__all__ = ["cpu_name", "cpu_seconds", "git_commit", "peak_rss_mb", "timing_lock"]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds every process on the machine has used since boot, CPU seconds this process
    has used); their difference over an interval is what the other processes used."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        machine = float("nan")
    own = os.times()
    return machine, own.user + own.system


@contextlib.contextmanager
def timing_lock() -> Iterator[list[str]]:
    """Marks this process as timing (a file named by its pid in a shared folder) and yields a list
    that, on exit, holds the other bench runs seen timing at the start or at the end ("pid N"):
    runs beside each other slow each other, and each should say so."""
    folder = Path(tempfile.gettempdir()) / "trompt-bench-timing"
    folder.mkdir(exist_ok=True)
    mine = folder / str(os.getpid())
    mine.touch()
    seen = set(_live_timing_pids(folder))
    others: list[str] = []
    try:
        yield others
    finally:
        seen |= set(_live_timing_pids(folder))
        mine.unlink(missing_ok=True)
        others += [f"pid {pid}" for pid in sorted(seen)]


def _live_timing_pids(folder: Path) -> list[int]:
    pids = []
    for entry in folder.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            os.kill(int(entry.name), 0)
            pids.append(int(entry.name))
        except ProcessLookupError:
            entry.unlink(missing_ok=True)  # a run that was killed while timing
        except PermissionError:
            pids.append(int(entry.name))  # alive, another user's
    return pids
