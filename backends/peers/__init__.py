"""Peers: another project's Trompt, timed beside ours but never checked against the reference.

A peer is not a backend. It computes a different model (docs/SPEC.md §12 says how it differs), so
it takes none of our parameters and cannot pass `bench check`; it is not in the backend registry,
so `bench list`, `bench check` and the default backend set of `bench all` never see it. What it
shares with a backend is the part `bench.timing.time_training` uses: `parse_options`,
`inexact_options`, `trainer(...)`, `device_name` and `versions`, and a trainer with the timing
interface of `backends.base.Trainer` (run, sync, losses, samples_per_step, min_warmup_steps,
agree_max, gradients, peak_memory_mb, run_notes). So a peer is timed by the very loop that
times ours.

`bench` reaches the peer only through `load` below, this package's counterpart of
`backends.load`. Importing this package needs numpy only; `load` imports the framework.

The one peer: pytorch-frame's `torch_frame.nn.models.Trompt` (PyPI `pytorch-frame`, the `peer`
extra of pyproject.toml).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from backends import spec

if TYPE_CHECKING:
    from backends.peers.pytorch_frame import PytorchFramePeer

FRAMEWORK = "torch_frame"  # the module pytorch-frame installs
NOT_INSTALLED = "the pytorch-frame peer is not installed: pip install -e '.[peer]'"


def installed() -> bool:
    """Whether pytorch-frame is importable here (asked without importing it, or torch)."""
    return importlib.util.find_spec(FRAMEWORK) is not None


def load(device: str = "cpu", dtype: str = "float32", seed: int = spec.SEED) -> PytorchFramePeer:
    """The pytorch-frame peer on `device` in `dtype`; every failure is a one-line ValueError."""
    if not installed():
        raise ValueError(NOT_INSTALLED)
    from backends.peers.pytorch_frame import PytorchFramePeer

    return PytorchFramePeer(device=device, dtype=dtype, seed=seed)
