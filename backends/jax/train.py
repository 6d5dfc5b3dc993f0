"""The JAX backend: Optax AdamW, one jitted train step, a device-resident Trainer.

Reads top to bottom: precision settings, optimizer, the pure train step, several steps per
dispatch (`lax.scan`), the Trainer (the speed surface), then the Backend (the checking surface).
The contract and the shapes are documented in `backends/base.py`; only differences are noted here.

float64 runs inside `jax.enable_x64(True)` and float32 runs inside `jax.enable_x64(False)` (a
context manager, not the global flag), so both dtypes work in one process without either
changing the other; jit caches are keyed on the setting, so nothing is traced twice per dtype.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from backends import spec
from backends.base import Backend, Trainer, batches_as_rows
from backends.jax import model, parallel
from backends.spec import TromptConfig

PRECISIONS = ("highest", "high", "default")
TRAINER_OPTIONS = {
    "variant": "r5",  # "r5" (fastest exact algorithm) or "r3" (see model.py)
    "steps_per_call": 8,  # optimizer steps fused into one dispatch by lax.scan in Trainer.run
    "precision": "highest",  # float32 matmuls: full fp32; "default" is bf16/TF32 on TPU/GPU (not exact)
    "parallel": "none",  # none | sharding | pmap | cells (see parallel.py)
    "n_devices": 0,  # how many devices the parallel modes use; 0 = all that fit
}
PREDICT_CHUNK = 64  # rows per forward in predict: bounds the (N, B, C, D) intermediates


@contextlib.contextmanager
def numerics(dtype: str, precision: str = "highest") -> Iterator[None]:
    """Every JAX call of this backend runs inside this: the dtype's x64 mode and matmul precision."""
    with jax.enable_x64(dtype == "float64"), jax.default_matmul_precision(precision):
        yield


def make_optimizer(lr: float, weight_decay: float) -> optax.GradientTransformation:
    """Optax AdamW with torch.optim.AdamW's semantics (frameworks_notes §1.6).

    Every argument is explicit because Optax's defaults differ from torch's (weight_decay 1e-4);
    eps_root=0 keeps eps outside the square root as torch does. Optax applies the decay as
    -lr * wd * param inside the update, torch as param *= 1 - lr * wd first: equal in exact
    arithmetic, different only in the last bit of float32.
    """
    beta1, beta2 = spec.BETAS
    return optax.adamw(learning_rate=lr, b1=beta1, b2=beta2, eps=spec.ADAM_EPS, eps_root=0.0,
                       weight_decay=weight_decay)


def train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, variant: str,
               carry: tuple, batch: tuple, axis_name: str | None = None) -> tuple[tuple, jax.Array]:
    """One AdamW step: (state, opt_state), (x, y, weight) -> new (state, opt_state), loss.

    With `axis_name` (pmap) each device holds part of the global batch: the loss is normalised
    by the global row count and losses and gradients are summed over devices, which is exactly
    the gradient of the global-batch mean.
    """
    state, opt_state = carry
    x, y, weight = batch
    n_rows = weight.sum() if axis_name is None else jax.lax.psum(weight.sum(), axis_name)
    loss, grads = jax.value_and_grad(model.loss_fn)(state, graphdef, x, y, weight, n_rows, variant)
    if axis_name is not None:
        loss, grads = jax.lax.psum((loss, grads), axis_name)
    updates, opt_state = optimizer.update(grads, opt_state, state)
    return (optax.apply_updates(state, updates), opt_state), loss


def make_run_steps(step: Callable, constrain_batch: Callable = lambda a: a,
                   axis_name: str | None = None) -> Callable:
    """K steps in one function: gathers each batch from the resident data, scans over steps.

    run(state, opt_state, x_all, y_all, idx (K, B), weight (K, B)) -> state, opt_state, losses (K,)
    """
    def run(state, opt_state, x_all, y_all, idx, weight):
        def body(carry, batch):
            rows, w = batch
            x, y, w = constrain_batch(x_all[rows]), constrain_batch(y_all[rows]), constrain_batch(w)
            return step(carry, (x, y, w), axis_name=axis_name)

        (state, opt_state), losses = jax.lax.scan(body, (state, opt_state), (idx, weight))
        return state, opt_state, losses

    return run


def pad_batches(batches: list[np.ndarray], width: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Index batches -> (K, width) int32 rows and (K, width) weights; padding rows get weight 0."""
    idx = np.zeros((len(batches), width), dtype=np.int32)
    weight = np.zeros((len(batches), width), dtype=dtype)
    for k, rows in enumerate(batches):
        idx[k, :len(rows)] = rows
        weight[k, :len(rows)] = 1
    return idx, weight


class JaxTrainer(Trainer):
    """Parameters, Optax state and the whole training set resident on the device(s).

    `run(batches)` sends `steps_per_call` steps at a time to one compiled `lax.scan`; a
    remainder goes through a compiled single step. Both executables are compiled in the first
    call (so `bench` sees compile time as warm-up), with the parameter and optimizer buffers
    donated so that XLA updates them in place. Losses stay on the device until `losses()`.
    """

    def __init__(self, backend: JaxBackend, params: dict[str, np.ndarray], cfg: TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float = spec.LR,
                 weight_decay: float = spec.WEIGHT_DECAY, **options: Any) -> None:
        unknown = sorted(set(options) - set(TRAINER_OPTIONS))
        if unknown:
            raise ValueError(f"unknown jax trainer option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(TRAINER_OPTIONS)}")
        opts = {**TRAINER_OPTIONS, **options}
        if opts["parallel"] is None:  # bench passes parallel=None when --parallel is not given
            opts["parallel"] = "none"
        for key, choices in (("variant", model.VARIANTS), ("precision", PRECISIONS)):
            if opts[key] not in choices:
                raise ValueError(f"unknown {key} {opts[key]!r}; choose one of {', '.join(choices)}")
        if not isinstance(opts["steps_per_call"], int) or opts["steps_per_call"] < 1:
            raise ValueError(f"steps_per_call must be a positive int, got {opts['steps_per_call']!r}")
        self.backend, self.cfg, self.lr, self.weight_decay = backend, cfg, lr, weight_decay
        self.variant, self.precision = opts["variant"], opts["precision"]
        self.steps_per_call = opts["steps_per_call"]
        self.placement = parallel.make_placement(opts["parallel"], backend.jax_devices(), cfg,
                                                 opts["n_devices"])
        self.compile_seconds = 0.0
        self.n_train = len(y_train)

        with self._numerics():
            self.graphdef, state = model.build(params, cfg, backend.dtype)
            self.optimizer = make_optimizer(lr, weight_decay)
            opt_state = self.optimizer.init(state)
            self._state = self.placement.put_state(state)
            self._opt_state = self.placement.put_state(opt_state)
            self._x = self.placement.put_data(np.asarray(x_train, dtype=backend.dtype))
            self._y = self.placement.put_data(np.asarray(y_train, dtype=backend.dtype))
        step = partial(train_step, self.graphdef, self.optimizer, self.variant)
        run = make_run_steps(step, self.placement.constrain_batch, self.placement.axis_name)
        self._run = self.placement.compile(run, self._state, self._opt_state)
        self._executables: dict[tuple[int, int], Any] = {}  # (steps, batch width) -> compiled
        self._loss_chunks: list[jax.Array] = []

    def _numerics(self) -> contextlib.AbstractContextManager:
        return numerics(self.backend.dtype, self.precision)

    def _executable(self, n_steps: int, width: int) -> Any:
        """The compiled K-step function for this shape; the first request compiles 1 and K steps."""
        if (n_steps, width) not in self._executables:
            start = time.perf_counter()
            for k in {n_steps, 1, self.steps_per_call}:
                dummy = pad_batches([np.zeros(1, dtype=int)] * k, width, self.backend.dtype)
                idx, weight = self.placement.put_batches(*dummy)
                lowered = self._run.lower(self._state, self._opt_state, self._x, self._y, idx, weight)
                self._executables[(k, width)] = lowered.compile()
            self.compile_seconds += time.perf_counter() - start
        return self._executables[(n_steps, width)]

    def _dispatch(self, batches: list[np.ndarray], width: int) -> None:
        idx, weight = self.placement.put_batches(*pad_batches(batches, width, self.backend.dtype))
        run = self._executable(len(batches), width)
        self._state, self._opt_state, losses = run(self._state, self._opt_state, self._x, self._y,
                                                   idx, weight)
        self._loss_chunks.append(losses)

    def step(self, idx: np.ndarray) -> None:
        self.run([idx])

    def run(self, batches: list[np.ndarray]) -> None:
        if not batches:
            return
        batches = [np.asarray(rows) for rows in batches]
        for rows in batches:
            if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0 or rows.max() >= self.n_train:
                raise ValueError(f"a batch must be a non-empty 1-D array of row indices in "
                                 f"[0, {self.n_train})")
        width = self.placement.batch_width(max(len(rows) for rows in batches))
        k = self.steps_per_call
        with self._numerics():
            n_full = len(batches) // k * k
            for start in range(0, n_full, k):
                self._dispatch(batches[start:start + k], width)
            for rows in batches[n_full:]:
                self._dispatch([rows], width)

    def sync(self) -> None:
        jax.block_until_ready((self._state, self._opt_state))

    def losses(self) -> list[float]:
        host = jax.device_get(self._loss_chunks)
        return [float(v) for chunk in host for v in self.placement.losses_to_host(chunk)]

    def _model_state(self) -> nnx.State:
        return self.placement.single_copy(self._state)

    def predict(self, x: np.ndarray) -> np.ndarray:
        spec.check_x(x, self.cfg)
        with self._numerics():
            return predict_in_chunks(self.graphdef, self._model_state(), np.asarray(x, self.backend.dtype),
                                     self.variant)

    def params(self) -> dict[str, np.ndarray]:
        with self._numerics():
            return model.state_to_numpy(self._model_state(), self.cfg)

    def peak_memory_mb(self) -> float | None:
        stats = self.placement.devices[0].memory_stats()  # None on CPU
        return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


_forward_jit = jax.jit(model.forward, static_argnums=(0, 3))


def predict_in_chunks(graphdef: nnx.GraphDef, state: nnx.State, x: np.ndarray,
                      variant: str = "r5") -> np.ndarray:
    """Forward over `x` in chunks of PREDICT_CHUNK rows (rows are independent: same numbers)."""
    parts = [_forward_jit(graphdef, state, x[i:i + PREDICT_CHUNK], variant)
             for i in range(0, len(x), PREDICT_CHUNK)]
    return np.concatenate(jax.device_get(parts))


@partial(jax.jit, static_argnums=(1, 5))
def _loss_and_grad_jit(state: nnx.State, graphdef: nnx.GraphDef, x: jax.Array, y: jax.Array,
                       weight: jax.Array, variant: str) -> tuple[jax.Array, nnx.State]:
    return jax.value_and_grad(model.loss_fn)(state, graphdef, x, y, weight, weight.sum(), variant)


class JaxBackend(Backend):
    name = "jax"
    devices = ("cpu", "gpu", "tpu")
    trainer_class = JaxTrainer

    def jax_devices(self) -> list[jax.Device]:
        return jax.devices(self.device)

    def _check_device_present(self) -> None:
        try:
            jax.devices(self.device)
        except RuntimeError:
            seen = ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
            raise ValueError(f"device {self.device!r} requested but JAX sees only: {seen}") from None

    def _forward(self, params: dict[str, np.ndarray], x: np.ndarray, cfg: TromptConfig) -> np.ndarray:
        with numerics(self.dtype):
            graphdef, state = model.build(params, cfg, self.dtype, self.jax_devices()[0])
            return predict_in_chunks(graphdef, state, x)

    def _loss_and_grad(self, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                       cfg: TromptConfig) -> tuple[float, dict[str, np.ndarray]]:
        with numerics(self.dtype):
            graphdef, state = model.build(params, cfg, self.dtype, self.jax_devices()[0])
            loss, grads = _loss_and_grad_jit(state, graphdef, x, y, np.ones(len(y), self.dtype), "r5")
            return float(loss), model.state_to_numpy(grads, cfg)

    def train_steps(self, params: dict[str, np.ndarray], batches: list, cfg: TromptConfig,
                    lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                    state: dict | None = None) -> tuple[dict[str, np.ndarray], list[float]]:
        """Optax AdamW (this backend's own optimizer) through a Trainer, one step per batch.

        `state`, if given, carries the Optax state between calls under the key "opt_state".
        """
        x_all, y_all, rows = batches_as_rows(batches, cfg)
        if not batches:
            return {k: np.array(v, dtype=self.dtype) for k, v in params.items()}, []
        trainer = self.trainer(params, cfg, x_all, y_all, lr, weight_decay, steps_per_call=1)
        if state is not None and "opt_state" in state:
            with trainer._numerics():
                trainer._opt_state = trainer.placement.put_state(state["opt_state"])
        trainer.run(rows)
        if state is not None:
            state["opt_state"] = jax.device_get(trainer._opt_state)
        return trainer.params(), trainer.losses()

    def device_name(self) -> str:
        if self.device == "cpu":
            return super().device_name()
        return self.jax_devices()[0].device_kind

    def versions(self) -> dict[str, str]:
        import flax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                "optax": optax.__version__}


def make_backend(device: str = "cpu", dtype: str = "float32") -> JaxBackend:
    return JaxBackend(device=device, dtype=dtype)


