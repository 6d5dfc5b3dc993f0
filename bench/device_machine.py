"""What `make device-check` finds on this machine: the GPUs nvidia-smi lists, a TPU's traces,
and which backend can use which device. A framework is imported only in child processes: a
process that touches a TPU holds it until it ends."""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import backends
from bench import run_all

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TPU_VARIABLES = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID", "COLAB_TPU_ADDR")
# Each process would otherwise take 75% of the GPU at start, so checks could not run side by side.
JAX_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}



@dataclasses.dataclass(frozen=True)
class Machine:
    """What this machine offers the checks; `detect()` fills it, tests build it by hand."""

    gpus: tuple[str, ...] = ()  # names nvidia-smi lists
    cuda_devices: int = 0  # GPUs torch can use
    bf16: bool = False  # torch's GPU has native bf16 (compute capability >= 8)
    jax_gpus: int = 0  # GPUs JAX can use
    tpus: tuple[str, ...] = ()  # TPU chips JAX sees, by device kind
    usable: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # backend -> devices
    why: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # backend -> device -> why not
    tpu_hint: str | None = None  # what suggested a TPU (a variable or device file), if anything
    minitorch: bool = False  # numba is installed (minitorch's CUDA kernels)
    xla_python: str | None = None  # .venv-xla's interpreter (torch_xla) when it exists

    @property
    def accelerated(self) -> bool:
        return bool(self.gpus or self.tpus)

    @property
    def name(self) -> str:
        devices = self.gpus or self.tpus
        if not devices:
            return "cpu"
        return devices[0] + (f" x{len(devices)}" if len(devices) > 1 else "")

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def can(self, backend: str, device: str) -> bool:
        return device in self.usable.get(backend, ())

    def not_here(self) -> list[str]:
        """Why a backend cannot use this machine's kind of accelerator (its checks are not planned)."""
        kinds = ({"cuda", "gpu"} if self.gpus else set()) | ({"tpu"} if self.tpus else set())
        return [f"{name} {device}: {reason}" for name, reasons in self.why.items()
                for device, reason in reasons.items() if device in kinds or device == "*"]

    def problems(self) -> list[str]:
        """What stops a check that this hardware should allow (each one fails the run)."""
        out = []
        if self.gpus and not self.can("torch", "cuda") and "torch" in self.usable:
            out.append(f"nvidia-smi lists {len(self.gpus)} GPU(s) but torch cannot use CUDA (a CPU build of "
                       "torch, or one the driver is too old for): the torch and reference checks on CUDA, "
                       "the ladder and torchrun cannot run")
        return out


def tpu_hint() -> str | None:
    """What suggests a TPU: a TPU VM's variable or device files (cheap: no framework imported)."""
    names = [k for k in TPU_VARIABLES if os.environ.get(k)]
    files = sorted(glob.glob("/dev/accel[0-9]*") + glob.glob("/dev/vfio/[0-9]*"))
    if names or files:
        return ", ".join(names + files[:2])
    return None


def child_json(code: str, env: dict[str, str] | None = None,
               timeout: float = run_all.PROBE_TIMEOUT_S) -> object:
    """The JSON that `python -c code` prints last, or None if it fails."""
    try:
        done = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, IndexError, ValueError):
        return None


TORCH_FACTS = """import json, torch
ok = torch.cuda.is_available()
print(json.dumps({"count": torch.cuda.device_count() if ok else 0,
                  "bf16": bool(ok and torch.cuda.get_device_capability(0)[0] >= 8)}))"""
JAX_FACTS = """import json, jax
def kinds(platform):
    try:
        return [d.device_kind for d in jax.devices(platform)]
    except RuntimeError:
        return []
print(json.dumps({"gpu": len(kinds("gpu")), "tpu": kinds("tpu")}))"""


def detect() -> Machine:
    gpus, hint = tuple(run_all.nvidia_gpus()), tpu_hint()
    if not gpus and not hint:
        return Machine()
    found = {name: run_all.probe(name, "float32") for name in backends.available()}
    usable = {name: tuple(devices) for name, (devices, _) in found.items()}
    torch_facts = child_json(TORCH_FACTS) if gpus and "cuda" in usable.get("torch", ()) else None
    jax_facts = child_json(JAX_FACTS, JAX_ENV) if {"gpu", "tpu"} & set(usable.get("jax", ())) else None
    torch_facts, jax_facts = torch_facts or {}, jax_facts or {}
    tpus = tuple(jax_facts.get("tpu", ())) or (("TPU",) if "tpu" in usable.get("jax", ()) else ())
    xla = ROOT / ".venv-xla" / "bin" / "python"
    return Machine(gpus=gpus, cuda_devices=int(torch_facts.get("count", 0)),
                   bf16=bool(torch_facts.get("bf16")), jax_gpus=int(jax_facts.get("gpu", 0)),
                   tpus=tpus, usable=usable,
                   why={name: why for name, (_, why) in found.items()}, tpu_hint=hint,
                   minitorch=bool(gpus) and importlib.util.find_spec("numba") is not None,
                   xla_python=str(xla) if xla.exists() else None)
