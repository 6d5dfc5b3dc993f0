"""Facts about the machine a result came from (framework-free)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from backends.base import cpu_name

__all__ = ["cpu_name", "cpu_seconds", "git_commit", "peak_rss_mb", "pin_to_cores", "timing_lock"]

FRAMEWORKS = ("torch", "jax", "mlx", "tinygrad")


def git_commit(where: Path | None = None) -> str | None:
    """The short commit of the checkout holding `where` (default: this project's), "-dirty" when
    its tracked files differ from it."""
    where = where or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=where, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    # "-dirty": a tracked file differs from the commit, except under results/, which a run
    # publishing with `--out results` rewrites itself (its own earlier files must not mark it).
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                            ":(top,exclude)results"], capture_output=True, text=True,
                           cwd=where, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def pin_to_cores(n: int) -> list[int]:
    """Run this process (and the threads it starts) on `n` of the cores it may use, and size the
    OpenMP/BLAS thread pools to match. Must run before a framework is imported: their pools read
    OMP_NUM_THREADS and the CPU mask once, at start. Returns the cores kept."""
    import sys

    allowed = sorted(os.sched_getaffinity(0))
    if n > len(allowed):
        raise ValueError(f"--cores {n}: this process may use only {len(allowed)} core(s)")
    loaded = [m for m in FRAMEWORKS if m in sys.modules]
    if loaded:
        raise ValueError(f"--cores must be applied before {loaded[0]} is imported")
    kept = allowed[:n]
    os.sched_setaffinity(0, kept)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)
    return kept


def cores_in_use() -> int:
    """The cores this process may run on (its CPU mask), which a pinned run narrows."""
    return len(os.sched_getaffinity(0))


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
