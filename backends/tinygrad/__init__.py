"""tinygrad backend: the R5 rewrite of Trompt (model.py), one TinyJit'd train step (train.py).

    b = backends.load("tinygrad", device="cpu", dtype="float32")

Devices: "cpu" (tinygrad's CPU device: kernels are C compiled by clang, which must be installed;
`DEV=CPU:X86` selects tinygrad's own x86 code generator instead, see docs/REPORT.md), "cuda" and
"metal" where present. float64 everywhere but Metal. The contract is in backends/base.py.
"""

from backends.registry import register

register("tinygrad", "backends.tinygrad.train:TinygradBackend", framework="tinygrad", extra="tinygrad")
