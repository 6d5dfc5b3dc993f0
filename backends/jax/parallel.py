"""Where the training state and data live, for one device or several; the global batch stays 8.

    python -m bench --backend jax --device tpu --parallel sharding   # all chips of a TPU host
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m bench --backend jax --parallel pmap

Modes (the train step itself is the same function in every mode, see train.py):
  none      one device.
  sharding  data parallel the current way: a ("data",) Mesh, parameters and optimizer state
            replicated (P()), each batch split over the devices (P("data")), plain jax.jit; XLA
            inserts the gradient all-reduce because the loss is a mean over the global batch.
  pmap      the same data parallelism the classic way: jax.pmap over a per-device step that sums
            losses and gradients with lax.psum (JAX keeps pmap in maintenance mode).
  cells     the N cells split over the devices (F8 in docs/SPEC.md): each device holds its cells'
            parameters and optimizer state and sees the whole batch; only the shared prompt and
            head gradients cross devices. Uses a ("cells",) Mesh and plain jax.jit.
A batch that does not split evenly (the short last batch of an epoch) is padded with rows of
weight 0, which add exact zeros to the loss and the gradients.
"""

from __future__ import annotations

from backends.jax import xla_flags  # noqa: F401  (it sets XLA_FLAGS, so it must precede jax)

# isort: split

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import flax.jax_utils
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from backends.spec import TromptConfig

MODES = ("none", "sharding", "pmap", "cells")


@dataclass
class Placement:
    """Single device: everything on `devices[0]`. Subclasses override what differs."""

    devices: list[jax.Device]
    axis_name: str | None = None  # set where the step itself must reduce over devices (pmap)
    mesh: Mesh | None = field(default=None, repr=False)

    def put_state(self, tree: Any) -> Any:
        return jax.device_put(tree, self.devices[0])

    def put_data(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array, self.devices[0])

    def put_batches(self, idx: np.ndarray, weight: np.ndarray) -> tuple[Any, Any]:
        """(K, width) row indices and weights, laid out as the compiled step expects them."""
        return jax.device_put((idx, weight), self.devices[0])

    def constrain_batch(self, array: jax.Array) -> jax.Array:
        return array

    def batch_width(self, n_rows: int) -> int:
        """Compiled batch width for batches of up to n_rows rows (a multiple of the split)."""
        return n_rows

    def compile(self, run: Callable, state: Any, opt_state: Any) -> Any:
        # Donating state and optimizer state lets XLA update the 2.6 M parameters in place.
        return jax.jit(run, donate_argnums=(0, 1))

    def compile_gradients(self, gradients: Callable) -> Any:
        """`gradients(state, x_all, y_all, idx, weight)` compiled for this placement (no donation:
        the state stays)."""
        return jax.jit(gradients)

    def losses_to_host(self, losses: np.ndarray) -> np.ndarray:
        return losses

    def single_copy(self, tree: Any) -> Any:
        """The state as one model (pmap keeps one copy per device)."""
        return tree


@dataclass
class ShardedPlacement(Placement):
    """Mesh + NamedSharding + jit: "sharding" (batch split) or "cells" (cell axis split)."""

    split: str = "data"

    def sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def _leaf_sharding(self, path: tuple, leaf: Any) -> NamedSharding:
        # In "cells" mode every array under `tcells` (parameters and their Adam moments) has the
        # cell axis first: split it. The prompt, the head and Adam's step count are replicated.
        in_cells = any(getattr(key, "key", None) == "tcells" for key in path)
        if self.split == "cells" and in_cells:
            return self.sharding(P("cells"))
        return self.sharding(P())

    def put_state(self, tree: Any) -> Any:
        def place(path: tuple, leaf: Any) -> jax.Array:
            return jax.device_put(leaf, self._leaf_sharding(path, leaf))

        return jax.tree_util.tree_map_with_path(place, tree)

    def put_data(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array, self.sharding(P()))  # every device holds the training set

    def put_batches(self, idx: np.ndarray, weight: np.ndarray) -> tuple[Any, Any]:
        rows = P(None, "data") if self.split == "data" else P()
        return jax.device_put((idx, weight), self.sharding(rows))

    def constrain_batch(self, array: jax.Array) -> jax.Array:
        if self.split != "data":
            return array
        return jax.lax.with_sharding_constraint(array, self.sharding(P("data")))

    def batch_width(self, n_rows: int) -> int:
        if self.split != "data":
            return n_rows
        n = len(self.devices)
        return -(-n_rows // n) * n

    def compile(self, run: Callable, state: Any, opt_state: Any) -> Any:
        # Outputs keep the inputs' placement, so the next call can reuse the same executable.
        shardings = jax.tree.map(lambda a: a.sharding, (state, opt_state))
        return jax.jit(run, donate_argnums=(0, 1), out_shardings=(*shardings, self.sharding(P())))


@dataclass
class PmapPlacement(Placement):
    """jax.pmap: every array gets a leading device axis; state and data are replicated."""

    axis_name: str | None = "devices"

    def put_state(self, tree: Any) -> Any:
        return flax.jax_utils.replicate(tree, self.devices)

    def put_data(self, array: np.ndarray) -> jax.Array:
        return flax.jax_utils.replicate(array, self.devices)

    def put_batches(self, idx: np.ndarray, weight: np.ndarray) -> tuple[Any, Any]:
        # (K, width) -> (devices, K, width / devices): device d gets its slice of every batch.
        n = len(self.devices)

        def split(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a.reshape(a.shape[0], n, -1).transpose(1, 0, 2))

        return split(idx), split(weight)

    def batch_width(self, n_rows: int) -> int:
        n = len(self.devices)
        return -(-n_rows // n) * n

    def compile(self, run: Callable, state: Any, opt_state: Any) -> Any:
        return jax.pmap(run, axis_name=self.axis_name, devices=self.devices, donate_argnums=(0, 1))

    def compile_gradients(self, gradients: Callable) -> Any:
        return jax.pmap(gradients, axis_name=self.axis_name, devices=self.devices)

    def losses_to_host(self, losses: np.ndarray) -> np.ndarray:
        return losses[0]  # (devices, K): every device holds the same summed loss

    def single_copy(self, tree: Any) -> Any:
        return jax.tree.map(lambda a: a[0], tree)


def make_placement(mode: str, devices: list[jax.Device], cfg: TromptConfig, n_devices: int = 0) -> Placement:
    """The placement for `mode` on (up to `n_devices` of) `devices`; 0 means as many as fit.
    The options arrive checked (JaxBackend._check_options)."""
    wanted = n_devices or len(devices)
    if mode == "none":
        return Placement(devices[:1])
    if mode == "cells":
        # Each device must hold the same number of cells: the largest divisor of N that fits.
        wanted = max(g for g in range(1, wanted + 1) if cfg.n_cycles % g == 0)
    chosen = devices[:wanted]
    if mode == "pmap":
        return PmapPlacement(chosen)
    axis = "data" if mode == "sharding" else "cells"
    mesh = Mesh(np.array(chosen), (axis,), axis_types=(AxisType.Auto,))
    return ShardedPlacement(chosen, mesh=mesh, split=axis)
