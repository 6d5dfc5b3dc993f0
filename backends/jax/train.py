"""The JAX backend: Optax AdamW, one jitted train step, a device-resident Trainer, the Backend.

Reads top to bottom: precision settings, optimizer, the pure train step, several steps per
dispatch (`lax.scan`), the Trainer (the speed surface), then the Backend (what it offers). The
contract and the shapes are documented in `backends/base.py`; only differences are noted here.

float64 runs inside `jax.enable_x64(True)` and float32 runs inside `jax.enable_x64(False)` (a
context manager, not the global flag), so both dtypes work in one process without either
changing the other; jit caches are keyed on the setting, so nothing is traced twice per dtype.
"""

from __future__ import annotations

from backends.jax import xla_flags  # noqa: F401  (it sets XLA_FLAGS, so it must precede jax)

# isort: split

import collections
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from flax import nnx

from backends import spec
from backends.base import Backend, Option, Trainer, parallel_option
from backends.jax import fused, model, parallel
from backends.native import KernelBuildError
from backends.spec import TromptConfig

PRECISIONS = ("highest", "high", "default")
# Steps per scan for what is left after the scans of steps_per_call (bench all's repeats, the
# sweep's short ones): the steps a short budget fits still go through a scan.
REMAINDER_SCAN = 8
Batch = tuple[jax.Array, jax.Array, jax.Array]  # x (B, C), y (B,), weight (B,)
# Events of XLA's CPU runtime that wrap ops rather than being one (op_times leaves them out).
WRAPPER_EVENTS = ("ThunkExecutor", "ThreadPool")


@contextlib.contextmanager
def numerics(dtype: str, precision: str = "highest") -> Iterator[None]:
    """Every JAX call of this backend runs inside this: the dtype's x64 mode and matmul precision."""
    with jax.enable_x64(dtype == "float64"), jax.default_matmul_precision(precision):
        yield


def make_optimizer(lr: float, weight_decay: float) -> optax.GradientTransformation:
    """The Adam part of torch.optim.AdamW in Optax: -lr * m_hat / (sqrt(v_hat) + eps).

    Every argument is explicit because Optax's defaults differ from torch's; eps_root=0 keeps eps
    outside the square root as torch does. The decoupled weight decay is not in here: optax.adamw
    adds -lr * wd * param to the update, while torch multiplies the parameter by 1 - lr * wd in
    its own dtype, and 1 - 3e-9 is exactly 1.0 in float32, so the original decays nothing in
    float32 (docs/SPEC.md §9) where Optax's form would still shrink small parameters.
    `apply_adamw` does it torch's way.
    """
    del weight_decay  # applied by apply_adamw
    beta1, beta2 = spec.BETAS
    return optax.chain(optax.scale_by_adam(b1=beta1, b2=beta2, eps=spec.ADAM_EPS, eps_root=0.0),
                       optax.scale(-lr))


def apply_adamw(params: nnx.State, updates: nnx.State, lr: float, weight_decay: float) -> nnx.State:
    """param * (1 - lr * wd) + update, the factor rounded to each parameter's dtype first, as
    torch.optim.AdamW does (decoupled decay from the pre-update parameter)."""
    decay = 1 - lr * weight_decay  # a Python float64, like torch's scalar
    return jax.tree.map(lambda p, u: p * jnp.asarray(decay, dtype=p.dtype) + u, params, updates)


def loss_and_grads(graphdef: nnx.GraphDef, variant: str, state: nnx.State, batch: Batch,
                   axis_name: str | None = None) -> tuple[jax.Array, nnx.State]:
    """The loss of one batch and its gradient at `state`.

    With `axis_name` (pmap) each device holds part of the global batch: the loss is normalised
    by the global row count and losses and gradients are summed over devices, which is exactly
    the gradient of the global-batch mean.
    """
    x, y, weight = batch
    n_rows = weight.sum() if axis_name is None else jax.lax.psum(weight.sum(), axis_name)
    loss, grads = jax.value_and_grad(model.loss_fn)(state, graphdef, x, y, weight, n_rows, variant)
    if axis_name is not None:
        loss, grads = jax.lax.psum((loss, grads), axis_name)
    return loss, grads


def train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, variant: str,
               lr: float, weight_decay: float, carry: tuple, batch: Batch,
               axis_name: str | None = None) -> tuple[tuple, jax.Array]:
    """One AdamW step: (state, opt_state), (x, y, weight) -> new (state, opt_state), loss."""
    state, opt_state = carry
    loss, grads = loss_and_grads(graphdef, variant, state, batch, axis_name)
    updates, opt_state = optimizer.update(grads, opt_state, state)
    return (apply_adamw(state, updates, lr, weight_decay), opt_state), loss


def gather_batch(x_all: jax.Array, y_all: jax.Array, rows: jax.Array, weight: jax.Array,
                 constrain_batch: Callable) -> Batch:
    """One batch from the resident training set, laid out as the placement wants it."""
    return constrain_batch(x_all[rows]), constrain_batch(y_all[rows]), constrain_batch(weight)


def make_run_steps(step: Callable, constrain_batch: Callable = lambda a: a,
                   axis_name: str | None = None) -> Callable:
    """K steps in one function: gathers each batch from the resident data, scans over steps.

    run(state, opt_state, x_all, y_all, idx (K, B), weight (K, B)) -> state, opt_state, losses (K,)
    """
    def run(state, opt_state, x_all, y_all, idx, weight):
        def body(carry, batch):
            rows, w = batch
            return step(carry, gather_batch(x_all, y_all, rows, w, constrain_batch), axis_name=axis_name)

        (state, opt_state), losses = jax.lax.scan(body, (state, opt_state), (idx, weight))
        return state, opt_state, losses

    return run


def make_gradients(graphdef: nnx.GraphDef, variant: str, constrain_batch: Callable = lambda a: a,
                   axis_name: str | None = None) -> Callable:
    """The train step's loss and gradient without the update, laid out as `make_run_steps`.

    gradients(state, x_all, y_all, idx (1, B), weight (1, B)) -> loss, grads
    """
    def gradients(state, x_all, y_all, idx, weight):
        batch = gather_batch(x_all, y_all, idx[0], weight[0], constrain_batch)
        return loss_and_grads(graphdef, variant, state, batch, axis_name)

    return gradients


def pad_batches(batches: list[np.ndarray], width: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Index batches -> (K, width) int32 rows and (K, width) weights; padding rows get weight 0."""
    idx = np.zeros((len(batches), width), dtype=np.int32)
    weight = np.zeros((len(batches), width), dtype=dtype)
    for k, rows in enumerate(batches):
        idx[k, :len(rows)] = rows
        weight[k, :len(rows)] = 1
    return idx, weight


_forward_jit = jax.jit(model.forward, static_argnums=(0, 3))


class JaxTrainer(Trainer):
    """Parameters, Optax state and the whole training set resident on the device(s).

    `run(batches)` sends `steps_per_call` steps at a time to one compiled `lax.scan`; a
    remainder goes through scans of REMAINDER_SCAN steps, then single steps (a single-step call
    runs at about half the speed of a scanned step on a CPU). Every executable is compiled in the
    first call (so `bench` sees compile time as warm-up), with the parameter and optimizer buffers
    donated so that XLA updates them in place. Losses stay on the device until `losses()`.
    """

    def __init__(self, backend: JaxBackend, params: dict[str, np.ndarray], cfg: TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float, weight_decay: float,
                 options: dict[str, Any]) -> None:
        super().__init__(backend, params, cfg, x_train, y_train, lr, weight_decay, options)
        self.variant, self.precision = options["variant"], options["precision"]
        self.transposed = model.TRANSPOSED.get(self.variant, ())
        self.steps_per_call = options["steps_per_call"]
        self.placement = parallel.make_placement(options["parallel"], backend.jax_devices(), cfg,
                                                 options["n_devices"])
        self.compile_seconds = 0.0
        if self.variant == "r5-fused":
            try:  # the first use on a machine compiles the C++ kernels: here, not in a timed step
                fused.register()
            except KernelBuildError as e:
                raise ValueError(str(e)) from None
        self.optimizer = make_optimizer(lr, weight_decay)
        with self._numerics():
            self.graphdef, state = model.build(params, cfg, backend.dtype, transposed=self.transposed)
            self._place(state, self.optimizer.init(state))
            self._x = self.placement.put_data(x_train)
            self._y = self.placement.put_data(y_train)
        step = partial(train_step, self.graphdef, self.optimizer, self.variant, lr, weight_decay)
        constrain, axis = self.placement.constrain_batch, self.placement.axis_name
        self._run_steps = self.placement.compile(make_run_steps(step, constrain, axis),
                                                 self._state, self._opt_state)
        self._gradients_at = self.placement.compile_gradients(
            make_gradients(self.graphdef, self.variant, constrain, axis))
        self._executables: dict[tuple[int, int], Any] = {}  # (steps, batch width) -> compiled
        self._loss_chunks: list[jax.Array] = []

    def _numerics(self) -> contextlib.AbstractContextManager:
        return numerics(self.backend.dtype, self.precision)

    def _place(self, state: nnx.State, opt_state: optax.OptState) -> None:
        self._state = self.placement.put_state(state)
        self._opt_state = self.placement.put_state(opt_state)

    def _executable(self, n_steps: int, width: int) -> Any:
        """The compiled function of n_steps steps for this shape; the first request also compiles
        every scan length `run` uses."""
        if (n_steps, width) not in self._executables:
            start = time.perf_counter()
            for k in {n_steps, *self._scan_lengths()}:
                dummy = pad_batches([np.zeros(1, dtype=int)] * k, width, self.backend.dtype)
                idx, weight = self.placement.put_batches(*dummy)
                lowered = self._run_steps.lower(self._state, self._opt_state, self._x, self._y, idx, weight)
                self._executables[(k, width)] = lowered.compile()
            self.compile_seconds += time.perf_counter() - start
        return self._executables[(n_steps, width)]

    def _dispatch(self, batches: list[np.ndarray], width: int) -> None:
        idx, weight = self.placement.put_batches(*pad_batches(batches, width, self.backend.dtype))
        run = self._executable(len(batches), width)
        self._state, self._opt_state, losses = run(self._state, self._opt_state, self._x, self._y,
                                                   idx, weight)
        self._loss_chunks.append(losses)

    def _run(self, batches: list[np.ndarray]) -> None:
        width = self.placement.batch_width(max(len(rows) for rows in batches))
        start = 0
        with self._numerics():
            for length in self._scan_lengths():
                while len(batches) - start >= length:
                    self._dispatch(batches[start:start + length], width)
                    start += length

    def _scan_lengths(self) -> list[int]:
        """The step counts `run` dispatches, longest first: steps_per_call, then REMAINDER_SCAN
        for what is left, then single steps."""
        return sorted({self.steps_per_call, self.timed_steps_multiple(), 1}, reverse=True)

    def timed_steps_multiple(self) -> int:
        return min(REMAINDER_SCAN, self.steps_per_call)

    def sync(self) -> None:
        jax.block_until_ready((self._state, self._opt_state))

    def losses(self) -> list[float]:
        host = jax.device_get(self._loss_chunks)
        return [float(v) for chunk in host for v in self.placement.losses_to_host(chunk)]

    def _predict(self, x: np.ndarray) -> np.ndarray:
        with self._numerics():
            model_state = self.placement.single_copy(self._state)
            return np.asarray(_forward_jit(self.graphdef, model_state, x, self.variant))

    def _gradients(self, rows: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        # The train step's own gradient function under the placement, without the update.
        width = self.placement.batch_width(len(rows))
        with self._numerics():
            idx, weight = self.placement.put_batches(*pad_batches([rows], width, self.backend.dtype))
            out = self._gradients_at(self._state, self._x, self._y, idx, weight)
            loss, grads = self.placement.single_copy(out)
            return float(loss), model.state_to_numpy(grads, self.cfg, self.transposed)

    def params(self) -> dict[str, np.ndarray]:
        with self._numerics():
            return model.state_to_numpy(self.placement.single_copy(self._state), self.cfg, self.transposed)

    def state(self) -> dict[str, np.ndarray]:
        # Optax's Adam state holds mu (torch's exp_avg), nu (exp_avg_sq) and count (the step),
        # the moments in the parameters' own NNX layout.
        with self._numerics():
            params, opt_state = self.placement.single_copy((self._state, self._opt_state))
            trees = {"param": params, "exp_avg": otu.tree_get(opt_state, "mu"),
                     "exp_avg_sq": otu.tree_get(opt_state, "nu")}
            # Copies: the device buffers are donated to (overwritten by) the next step.
            out = {f"{prefix}/{name}": np.array(value, order="C")
                   for prefix, tree in trees.items()
                   for name, value in model.state_to_numpy(tree, self.cfg, self.transposed).items()}
            out["step"] = np.array(int(otu.tree_get(opt_state, "count")), dtype=np.int64)
        return out

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        names = spec.param_names(self.cfg)

        def tree(prefix: str) -> nnx.State:
            return model.build({k: state[f"{prefix}/{k}"] for k in names}, self.cfg, self.backend.dtype,
                               transposed=self.transposed)[1]

        with self._numerics():
            params = tree("param")
            fresh = self.optimizer.init(params)
            count = np.asarray(state["step"], dtype=otu.tree_get(fresh, "count").dtype)
            self._place(params, otu.tree_set(fresh, count=count, mu=tree("exp_avg"), nu=tree("exp_avg_sq")))

    op_time_basis = "summed over the threads of XLA's intra-op pool"

    def op_times(self, batches: Sequence[np.ndarray]) -> list[tuple[str, float, int]] | None:
        """XLA's own ops (its fusions, dots, custom calls) as the JAX profiler traces them on the
        CPU, where each runs as one event on a thread of XLA's intra-op pool (its second
        workgroup, if any, runs inside that time on another thread, untraced). Wrapper events of
        the executor and of the pool are left out. Not on accelerators: their planes differ."""
        if self.backend.device != "cpu":
            return None
        with tempfile.TemporaryDirectory(prefix="jax-ops-") as folder:
            jax.profiler.start_trace(folder)
            try:
                self.run(batches)
                self.sync()
            finally:
                jax.profiler.stop_trace()
            trace = next(Path(folder).rglob("*.xplane.pb"))
            data = jax.profiler.ProfileData.from_file(str(trace))
        totals: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
        for plane in data.planes:
            for line in plane.lines:
                if not line.name.startswith("tf_XLA"):  # XLA's pool threads, not Python's
                    continue
                for event in line.events:
                    if any(word in event.name for word in WRAPPER_EVENTS):
                        continue
                    totals[event.name][0] += event.duration_ns / 1e9
                    totals[event.name][1] += 1
        return sorted(((name, t, n) for name, (t, n) in totals.items()), key=lambda op: -op[1])

    def peak_memory_mb(self) -> float | None:
        stats = self.placement.devices[0].memory_stats()  # None on CPU
        return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


class JaxBackend(Backend):
    name = "jax"
    devices = ("cpu", "gpu", "tpu")
    trainer_class = JaxTrainer
    options = (
        Option("variant", str, "r5", "algorithm (all exact): r5, r5-autodiff (r5 without the hand "
               "backward), r5-fused (r5's passes over H in C++ kernels; cpu) or r3", choices=model.VARIANTS),
        Option("steps_per_call", int, 64, "optimizer steps fused into one dispatch by lax.scan (bench "
               "times a multiple of it)", minimum=1),
        Option("precision", str, "highest", "float32 matmul precision; below highest TPUs and GPUs "
               "use bf16/TF32", choices=PRECISIONS, exact=("highest",)),
        parallel_option(*parallel.MODES[1:]),
        Option("n_devices", int, 0, "devices the parallel modes use; 0 = as many as fit", minimum=0),
    )

    def jax_devices(self) -> list[jax.Device]:
        return jax.devices(self.device)

    def _check_device_present(self) -> None:
        try:
            found = jax.devices(self.device)
        except RuntimeError:
            seen = ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
            raise ValueError(f"device {self.device!r} requested but JAX sees only: {seen}") from None
        # TPUs have no float64 units: XLA emulates a few float64 ops there and rejects or demotes
        # the rest (matmuls among them), so the float64 check's 1e-9 would not mean float64.
        if self.dtype == "float64" and found[0].platform == "tpu":
            raise ValueError("TPUs have no float64 (XLA emulates few 64-bit ops there); use dtype "
                             "float32 on 'tpu', or float64 on 'cpu'")

    def _check_options(self, options: dict[str, Any]) -> None:
        if options["variant"] == "r5-fused" and (self.device != "cpu" or options["parallel"] != "none"):
            raise ValueError("variant r5-fused runs on the CPU only (C++ CPU kernels), on one device "
                             f"(parallel=none), not on {self.device} with parallel={options['parallel']}")
        n_devices, seen = options["n_devices"], len(self.jax_devices())
        if n_devices > 1 and options["parallel"] == "none":
            raise ValueError("n_devices > 1 needs a parallel mode (sharding, pmap or cells)")
        if n_devices > seen:
            raise ValueError(f"n_devices={n_devices} but JAX sees {seen} {self.device} device(s)")

    def device_name(self) -> str:
        if self.device == "cpu":
            return super().device_name()
        return self.jax_devices()[0].device_kind

    def versions(self) -> dict[str, str]:
        import flax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                "optax": optax.__version__}
