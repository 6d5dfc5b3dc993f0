"""Checkpoints that cannot run code and cannot be half-written.

Layout of a checkpoint directory D:

    D/step-00000120/state.npz   parameters, AdamW moments and step count, every loss so far
                                (numpy arrays only; read back with allow_pickle=False)
    D/step-00000120/meta.json   what run it belongs to and where in the data order it stopped
    D/latest                    the name of the newest complete checkpoint

A checkpoint is written into a temporary directory that is renamed into place only when both
files are complete and flushed, and `latest` is replaced atomically after that, so a process
killed at any instant leaves either the previous checkpoint or the new one, never a torn one.
The data order needs no saved RNG state: it is a pure function of (seed, epoch), so the epoch and
the batch position within it are enough to continue exactly where the run stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from bench.results import write_json_atomic

FORMAT = 1
KEEP = 2  # complete checkpoints kept on disk (the newest ones)
# Fields of meta.json that must match for a resume to continue the same run (the number of epochs
# may grow: a finished run can be continued for more epochs).
RUN_IDENTITY = ("backend", "dtype", "config", "data", "seed", "batch_size", "lr", "weight_decay", "options",
                "max_steps")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(directory: str | Path, state: dict[str, np.ndarray], losses: list[float], meta: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{meta['global_step']:08d}"
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".{name}."))
    try:
        with open(tmp / "state.npz", "wb") as f:
            np.savez(f, losses=np.asarray(losses, np.float64), **state)
            f.flush()
            os.fsync(f.fileno())
        write_json_atomic(tmp / "meta.json", {"format": FORMAT, **meta})
        final = directory / name
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(directory)
    latest_tmp = directory / ".latest.tmp"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, directory / "latest")
    _prune(directory)
    return final


def _prune(directory: Path) -> None:
    complete = sorted(p for p in directory.glob("step-*") if (p / "meta.json").exists())
    for old in complete[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)


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
