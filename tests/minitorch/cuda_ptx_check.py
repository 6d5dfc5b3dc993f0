"""Compile every CUDA kernel of minitorch for a real GPU and report what each one needs per thread.

The simulator runs kernels as Python, so it cannot tell whether a kernel types for the GPU or
how many registers it takes; this script compiles each kernel to PTX with numba's CUDA target
(NVVM, no GPU needed) and assembles it with ``ptxas -v``. A block launches only if its threads'
registers fit the 64K-register file of one multiprocessor, and static shared memory must stay
within 48 KiB; ``test_minitorch_cuda.py`` checks both from the JSON printed here:

    {"kernel name": {"registers": int, "shared_bytes": int, "stack_bytes": int,
                     "spill_bytes": int, "threads_per_block": int}, ...}

or ``{"skip": "why"}`` when NVVM or ptxas is not installed. Run it with NUMBA_ENABLE_CUDASIM
unset or 0 (the simulator has no compiler).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CC = (8, 0)  # A100; the limits checked (64K registers, 48 KiB static shared) hold since Maxwell


def find_ptxas() -> str | None:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "ptxas").exists():
            return str(Path(root) / "bin" / "ptxas")
    return shutil.which("ptxas")


def resources(ptxas: str, ptx: str) -> dict[str, int]:
    """Registers, shared memory, stack and spills of the one kernel in ``ptx``, from ptxas -v."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run(
            [ptxas, "-v", f"-arch=sm_{CC[0]}{CC[1]}", str(source), "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True, text=True, check=True,
        )
    log = done.stderr
    used = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", log)
    assert used, log
    return {
        "registers": int(used.group(1)),
        "shared_bytes": int(used.group(2) or 0),
        "stack_bytes": max(int(n) for n in re.findall(r"(\d+) bytes stack frame", log)),
        "spill_bytes": max(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)),
    }


def main() -> int:
    from numba import cuda
    from numba import types as nt
    from numba.cuda import dispatcher

    ptxas = find_ptxas()
    if ptxas is None:
        print(json.dumps({"skip": "ptxas not found (no CUDA toolkit)"}))
        return 0
    try:
        cuda.compile_ptx(lambda a: None, (nt.float64[:],), cc=CC)
    except Exception as error:  # NVVM missing or too old: nothing below could compile either
        print(json.dumps({"skip": f"numba cannot compile PTX here: {type(error).__name__}: {error}"}))
        return 0
    # Kernels call device functions, which numba compiles for the current GPU's compute
    # capability; there is no GPU here, so name the architecture.
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=CC)

    from minitorch import cuda_ops, operators

    array = nt.float64[:]

    def index(dims: int) -> Any:
        return nt.UniTuple(nt.int64, dims)

    def tensor(dims: int) -> tuple[Any, ...]:
        return array, index(dims), index(dims)

    size = nt.int64
    elementwise = cuda_ops._elementwise_threads(10**6)
    kernels: dict[str, tuple[Callable[..., None], tuple[Any, ...], int]] = {
        "map": (cuda_ops.tensor_map(cuda_ops.device_jit(operators.sigmoid)).py_func,
                (*tensor(4), size, *tensor(4)), elementwise),
        "zip": (cuda_ops.tensor_zip(cuda_ops.device_jit(operators.mul)).py_func,
                (*tensor(4), size, *tensor(4), *tensor(2)), elementwise),
        "reduce": (cuda_ops.tensor_reduce(cuda_ops.device_jit(operators.max)).py_func,
                   (*tensor(4), size, *tensor(4), nt.int64, nt.float64), cuda_ops.REDUCE_BLOCK),
        "matrix_multiply": (cuda_ops._tensor_matrix_multiply,
                            (*tensor(3), size, *tensor(3), *tensor(3)),
                            cuda_ops.TILE * cuda_ops.TILE_ROWS),
        "sum_practice": (cuda_ops._sum_practice, (array, array, size), cuda_ops.PRACTICE_BLOCK),
        "mm_practice": (cuda_ops._mm_practice, (array, array, array, size), cuda_ops.TILE**2),
    }
    report = {}
    for name, (fn, signature, threads) in kernels.items():
        ptx, _ = cuda.compile_ptx(fn, signature, cc=CC)
        report[name] = {**resources(ptxas, ptx), "threads_per_block": threads}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
