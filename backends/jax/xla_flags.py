"""XLA's CPU setting for this backend. It must act before JAX is imported, so train.py, model.py
and parallel.py import this module before they import JAX.

jaxlib 0.10's CPU compiler hands reductions to YNNPACK fusions that materialise full-size
broadcast copies; turning that off roughly halves a Trompt step on the CPU and gives identical
numbers. XLA reads XLA_FLAGS once, when JAX starts a client, hence "before JAX is imported".
"""

from __future__ import annotations

import importlib.util
import os
import sys

CPU_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
# PJRT plugins that make JAX run on an accelerator rather than the CPU.
ACCELERATOR_PLUGINS = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin")


def cpu_is_the_platform() -> bool:
    """Whether JAX in this process will compute on the CPU.

    The device is not known yet when this runs (the backend class is imported before it is
    instantiated), so the decision reads what decides JAX's platform: JAX_PLATFORMS when set, else
    whether an accelerator plugin is installed. The TPU and GPU plugins parse XLA_FLAGS too and
    may abort on a flag their XLA build does not know, so any doubt leaves the flag out: the only
    cost is CPU speed on an accelerator machine, never a failure there.
    """
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms == "cpu"
    return not any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_PLUGINS)


def apply_cpu_xla_flag() -> bool:
    """Add CPU_XLA_FLAG to XLA_FLAGS if the CPU is the platform, JAX is not yet imported and the
    user did not choose this setting; True if it was added."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" in sys.modules or "xla_cpu_experimental_ynn_fusion_type" in flags or not cpu_is_the_platform():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_XLA_FLAG}".strip()
    return True


apply_cpu_xla_flag()
