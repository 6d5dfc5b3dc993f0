"""What the backends' C++ kernels need to be compiled at first use, framework-free: the shared
header of the fused embedding-block kernels and a tag of the CPU's instruction sets (read from
/proc/cpuinfo, as `base.cpu_name` reads the CPU's name).

The kernels are built with -march=native, so a binary is specific to the CPU it was built on: its
file or module name carries `isa_tag()`, and a home directory shared by an AVX2 and an AVX-512
machine keeps one build for each.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

FUSED_BLOCK_HEADER = Path(__file__).with_name("fused_block.h")
FUSED_MASK_HEADER = Path(__file__).with_name("fused_mask.h")
KERNEL_HEADERS = (FUSED_BLOCK_HEADER, FUSED_MASK_HEADER)  # what a binding may include


class KernelBuildError(RuntimeError):
    """The C++ kernels could not be compiled (no compiler, no ninja, a compile error)."""


def cpuinfo_field(name: str, cpuinfo: str | None = None) -> str | None:
    """The value of the first `name` line of /proc/cpuinfo (or of the text given), None without
    one (not Linux, or no such line)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                 if line.startswith(name) and ":" in line), None)


def isa_tag() -> str:
    """A short hash of the CPU's instruction-set flags (/proc/cpuinfo), or of the machine type."""
    flags = cpuinfo_field("flags") or platform.machine()
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def source_tag(*paths: Path) -> str:
    """A short hash of the files' contents: a build named with it is rebuilt when one changes."""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]
