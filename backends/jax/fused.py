"""r5's embedding block and mask through the fused C++ kernels of the torch backend, called from XLA.

The kernels (backends/fused_block.h; maths and notation in backends/torch/fused.py) recompute
H = relu(x W + Bias) inside every pass instead of storing it. Here they are bound to XLA through
its FFI (fused_block_ffi.cpp): four custom calls that `model.r5_forward` and `backward.r5_backward`
use in place of the passes over H that XLA would otherwise generate, when the variant is
r5-fused, and two more for the importance mask with the head's prompt pooling (fused_mask.h, the
same kernels as torch's MaskPool). Everything else in the step (the mask's queries and keys, the
head's MLP, the (B, C)-sized algebra between the passes, AdamW) stays XLA's.

Why. XLA's CPU compiler runs every (B, C, D) reduction of r5 either through a library call or a
generic loop that needs H stored: its profile of the r5 step shows H, H − μ (twice) and (H − μ)²
written out and re-read, matrix-vector products over them, and reduce-windows (its pairwise
summation) that take a stored operand. The kernels do the same sums in registers.

Layout. The kernels want W and Bias channels-major, (D, C), and the r5-fused state stores them
so (model.TRANSPOSED). The wrappers below take them (C, D), as the model's formulas are written,
and pass their transposes: the model hands over the stored arrays transposed, and XLA cancels the
two transposes, so the kernels read the state in place and write the gradients in its layout.
Stored (C, D), the two arrays (3 MB each at full size) would be copied at every call and their
gradients transposed back (docs/REPORT.md compares the two layouts).

Building. The binding is compiled at first use with the machine's g++ (-O3 -march=native, a few
seconds) against the FFI headers that jaxlib ships (jax.ffi.include_dir()), into
~/.cache/trompt-bench (or $XDG_CACHE_HOME/trompt-bench). The file's name carries hashes of the
sources, of the CPU's instruction sets and of the jaxlib version, so a change of any of them
builds a new one; it is written to a temporary name and renamed, so processes that build at once
never load a half-written file.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import jaxlib
import numpy as np

from backends import native
from backends.native import KernelBuildError
from backends.spec import LN_EPS

SOURCE = Path(__file__).with_name("fused_block_ffi.cpp")
# XLA FFI targets: the name JAX calls -> the handler symbol fused_block_ffi.cpp exports.
TARGETS = {"trompt_stats_forward": "TromptStatsForward", "trompt_pool_forward": "TromptPoolForward",
           "trompt_pool_grad_q": "TromptPoolGradQ", "trompt_block_backward": "TromptBlockBackward",
           "trompt_mask_forward": "TromptMaskForward", "trompt_mask_backward": "TromptMaskBackward"}
FLAGS = ["-O3", "-march=native", "-std=c++20", "-shared", "-fPIC"]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trompt-bench"


def library_path() -> Path:
    tag = native.source_tag(SOURCE, *native.KERNEL_HEADERS)
    return cache_dir() / f"fused_block_ffi_{tag}_{native.isa_tag()}_jaxlib{jaxlib.__version__}.so"


def build(path: Path) -> None:
    """Compile the binding into `path` (atomically), or raise KernelBuildError in one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".so.tmp")
    os.close(fd)
    cmd = ["g++", *FLAGS, f"-I{jax.ffi.include_dir()}", f"-I{native.FUSED_BLOCK_HEADER.parent}", str(SOURCE),
           "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        os.unlink(tmp)
        raise KernelBuildError(f"the r5-fused C++ kernels could not be built ({e.strerror}: {cmd[0]}); "
                               "they need g++") from None
    if done.returncode != 0:
        os.unlink(tmp)
        lines = done.stderr.splitlines()
        first = next((line for line in lines if "error" in line), lines[0] if lines else "g++ failed")
        raise KernelBuildError(f"the r5-fused C++ kernels could not be built ({first})")
    os.replace(tmp, path)


@functools.cache
def register() -> None:
    """Build the binding if this machine has none yet, load it and register its FFI targets."""
    path = library_path()
    if not path.exists():
        build(path)
    library = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")


# ---------------------------------------------------------------------------------------------
# The four passes, for one cell: x (B, C), w and b (C, D) (the transposes of the stored ones). Under
# jax.vmap over the cells, "expand_dims" gives the kernels every cell at once (x with a leading
# axis of 1, the rest with N).


def _call(target: str, *shapes_and_dtype: tuple) -> Callable:
    """The FFI call of `target` with outputs of these shapes and dtype (registered at first use)."""
    register()
    *shapes, dtype = shapes_and_dtype
    out = tuple(jax.ShapeDtypeStruct(shape, dtype) for shape in shapes)
    return jax.ffi.ffi_call(target, out if len(out) > 1 else out[0], vmap_method="expand_dims")


def stats_forward(x: jax.Array, w: jax.Array, b: jax.Array, u: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(μ, r, t_raw), each (B, C), of H = relu(x W + Bias)."""
    call = _call("trompt_stats_forward", x.shape, x.shape, x.shape, w.dtype)
    return call(x, w.T, b.T, u, eps=np.float64(LN_EPS))


def pool_forward(x: jax.Array, w: jax.Array, b: jax.Array, mean: jax.Array, q: jax.Array) -> jax.Array:
    """ẑ = Σ_c q_c (H[c,:] − μ_c), (B, D)."""
    return _call("trompt_pool_forward", (x.shape[0], w.shape[1]), w.dtype)(x, w.T, b.T, mean, q)


def pool_grad_q(x: jax.Array, w: jax.Array, b: jax.Array, mean: jax.Array, g_z: jax.Array) -> jax.Array:
    """g_q = Σ_d (H − μ) g_ẑ, (B, C)."""
    return _call("trompt_pool_grad_q", x.shape, w.dtype)(x, w.T, b.T, mean, g_z)


def block_backward(x: jax.Array, w: jax.Array, b: jax.Array, u: jax.Array, mean: jax.Array,
                   rstd: jax.Array, g_mean: jax.Array, g_rstd: jax.Array, g_traw: jax.Array, q: jax.Array,
                   g_z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(g_W, g_Bias (C, D), g_u (D,)) from g_H = a + g_traw u + k (H − μ) + q g_ẑ where pre > 0
    (backends/torch/fused.py gives a and k), summed over the rows."""
    C, D = w.shape
    call = _call("trompt_block_backward", (D, C), (D, C), (D,), w.dtype)
    g_wt, g_bt, g_u = call(x, w.T, b.T, u, mean, rstd, g_mean, g_rstd, g_traw, q, g_z)
    return g_wt.T, g_bt.T, g_u


# ---------------------------------------------------------------------------------------------
# The mask and the prompt pooling (backends/fused_mask.h, maths in backends/torch/fused.py), for one
# cell: Q (P, D), K (C, D), t (B, C), s, shift and e (P,).


def mask_forward(query: jax.Array, key: jax.Array, t: jax.Array, s: jax.Array, shift: jax.Array, e: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """α (B, C) and π·e (B, 1), then what the backward needs: M (P, C), L and π (B, P)."""
    (P, _), C, B = query.shape, key.shape[0], t.shape[0]
    call = _call("trompt_mask_forward", (B, C), (B, 1), (P, C), (B, P), (B, P), query.dtype)
    return call(query, key, t, s, shift, e)


def mask_backward(query: jax.Array, key: jax.Array, t: jax.Array, s: jax.Array, e: jax.Array, mask: jax.Array,
                  logits: jax.Array, weights: jax.Array, g_alpha: jax.Array, g_offset: jax.Array
                  ) -> tuple[jax.Array, ...]:
    """The cotangents of Q, K, t, s, shift and e."""
    shapes = (query.shape, key.shape, t.shape, s.shape, s.shape, e.shape)
    call = _call("trompt_mask_backward", *shapes, query.dtype)
    return call(query, key, t, s, e, mask, logits, weights, g_alpha, g_offset)
