"""Checkpoints that cannot run code and cannot be half-written.

Layout of a checkpoint directory D:

    D/step-00000120/state.npz   parameters, AdamW moments and step count, every loss so far
                                (numpy arrays only; read back with allow_pickle=False)
    D/step-00000120/meta.json   what run it belongs to and where in the data order it stopped
    D/latest                    the name of the newest complete checkpoint
    D/.lock                     held (flock) by the run using D; it holds that run's pid

A checkpoint is written into a temporary directory that is renamed into place only when both
files are complete and flushed, and `latest` is replaced atomically after that, so a process
killed at any instant leaves either the previous checkpoint or the new one, never a torn one.
The data order needs no saved RNG state: it is a pure function of (seed, epoch), so the epoch and
the batch position within it are enough to continue exactly where the run stopped.

One run uses a directory at a time: `open_run` takes an advisory lock on D/.lock before reading or
writing anything and keeps it for the whole run (the OS drops it when the process dies, so a killed
run leaves no stale lock). A directory that already holds checkpoints is refused unless the run
resumes them or is told to overwrite them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench import output

FORMAT = 1
KEEP = 2  # complete checkpoints kept on disk (the newest ones)
# Fields of meta.json that must match for a resume to continue the same run (the number of epochs
# may grow: a finished run can be continued for more epochs).
RUN_IDENTITY = ("backend", "dtype", "config", "data", "seed", "batch_size", "lr", "weight_decay", "options",
                "max_steps")


LOCK_NAME = ".lock"


def _read_umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(directory: str | Path, state: dict[str, np.ndarray], losses: list[float], meta: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = _step_name(meta["global_step"])
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".{name}."))  # unique per process
    try:
        with open(tmp / "state.npz", "wb") as f:
            np.savez(f, losses=np.asarray(losses, np.float64), **state)
            f.flush()
            os.fsync(f.fileno())
        output.write_json(tmp / "meta.json", {"format": FORMAT, **meta})
        os.chmod(tmp, 0o777 & ~_read_umask())  # mkdtemp makes 0700; files get theirs from bench.output
        final = directory / name
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(directory)
    _write_latest(directory, name)
    _prune(directory)
    return final


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def _step_of(path: Path) -> int | None:
    """The step number of a step-N folder name, None for anything else."""
    number = path.name.removeprefix("step-")
    return int(number) if path.name.startswith("step-") and number.isdigit() else None


def _write_latest(directory: Path, name: str) -> None:
    output.write_text(directory / "latest", name + "\n")  # atomic; temporary name unique per process
    _fsync_dir(directory)


def _latest_name(directory: Path) -> str | None:
    try:
        return (directory / "latest").read_text().strip()
    except FileNotFoundError:
        return None


def _prune(directory: Path) -> None:
    """Keep the KEEP newest complete checkpoints up to and including the one `latest` names, in step
    order; never the one `latest` names. Nothing is pruned while `latest` names no checkpoint."""
    latest = directory / (_latest_name(directory) or "")
    latest_step = _step_of(latest)
    if latest_step is None or not (latest / "meta.json").exists():
        return
    steps = [(step, p) for p in directory.glob("step-*")
             if (step := _step_of(p)) is not None and step <= latest_step and (p / "meta.json").exists()]
    for _, old in sorted(steps)[:-KEEP]:
        if old.name != latest.name:
            shutil.rmtree(old, ignore_errors=True)


def holds_checkpoints(directory: str | Path) -> bool:
    """Whether D holds a `latest` pointer or any step-* entry (complete or not)."""
    directory = Path(directory)
    return (directory / "latest").exists() or any(directory.glob("step-*"))


@contextlib.contextmanager
def lock(directory: str | Path) -> Iterator[Path]:
    """Hold the advisory lock of a checkpoint directory (created if needed) until the block ends.

    Non-blocking: ValueError naming the holder's pid when another process holds it. The holder's pid
    is written into D/.lock; the OS releases the lock when the holder exits or is killed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)  # no O_TRUNC: the holder's pid
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(f"checkpoint directory {directory} is in use by another run "
                             f"(pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield directory
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def open_run(directory: str | Path, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Lock D for one run and make sure the run may use it, for the whole block.

    Under the lock: leftover temporary files of killed runs are removed; a D that already holds
    checkpoints is refused (ValueError) unless `resume` (the caller then checks that the checkpoint
    is the same run) or `overwrite` (its step-* folders and `latest` are removed first).
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the checkpoints in the "
                         "directory or replace them, not both")
    with lock(directory) as directory:
        for leftover in [*directory.glob(".step-*"), *directory.glob(".latest.*")]:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        if not resume and holds_checkpoints(directory):
            if not overwrite:
                latest = _latest_name(directory)
                found = f"latest: {latest}" if latest else "no 'latest' file"
                raise ValueError(f"checkpoint directory {directory} already holds checkpoints ({found}); "
                                 "pass --resume to continue that run or --overwrite to replace them")
            (directory / "latest").unlink(missing_ok=True)
            for old in directory.glob("step-*"):
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
            _fsync_dir(directory)
        yield directory


def load_latest(directory: str | Path) -> tuple[dict[str, np.ndarray], list[float], dict]:
    """(state, losses, meta) of the newest complete checkpoint; ValueError naming any problem."""
    directory = Path(directory)
    pointer = directory / "latest"
    if not pointer.exists():
        raise ValueError(f"no checkpoint to resume from in {directory} (no 'latest' file)")
    name = pointer.read_text().strip()
    if not name.startswith("step-") or "/" in name:
        raise ValueError(f"{pointer} is malformed (it names {name!r})")
    folder = directory / name
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise ValueError(f"checkpoint {folder} is missing meta.json") from None
    except json.JSONDecodeError:
        raise ValueError(f"checkpoint {folder}/meta.json is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {folder} has format {meta.get('format')!r}, expected {FORMAT}")
    try:
        with np.load(folder / "state.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise ValueError(f"checkpoint {folder} is missing state.npz") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"checkpoint {folder}/state.npz is unreadable ({type(e).__name__})") from None
    losses = arrays.pop("losses", np.zeros(0)).tolist()
    return arrays, losses, meta


def check_same_run(meta: dict, identity: dict) -> None:
    for key in RUN_IDENTITY:
        if meta.get(key) != identity.get(key):
            raise ValueError(f"the checkpoint belongs to another run: {key} was {meta.get(key)!r}, "
                             f"now {identity.get(key)!r}")
